"""Training stage: prepared sequences -> a trained model, with accelerate on one CPU or many GPUs.

`train(run)` reads top to bottom: data and model, the optimizer, `accelerator.prepare`, then epochs of
accumulate/clip/step, validation every `eval_every` epochs with early stopping on NDCG@10, the best
model saved with `save_pretrained` (plus vocabularies) into `output_dir`, and the full training
state (`save_state`) after every epoch for `--resume`. At the end the best model is evaluated on
the validation and test splits, with popularity beside it, into `metrics.json`.
"""

import contextlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from . import MODEL_FAMILIES
from .checkpoint import TRAINING_CONFIG_FILE, load_checkpoint, read_json, save_checkpoint
from .collators import training_collator
from .errors import HfSeqRecError
from .evaluation import evaluate_model
from .run_config import build_model_config, load_run_config
from .sequences import REPORT_FILE, load_prepared


class LengthGroupedBatches:
    """Random batches reshuffled every epoch, optionally of users with similar sequence lengths.

    Indices are shuffled; with `group_by_length` they are then cut into groups of 50 batches and
    sorted by length inside a group (little padding). Then they are cut into batches and the batches
    shuffled. The order depends only on (seed, epoch), so a resumed run sees the same batches as an
    uninterrupted one.
    """

    def __init__(self, lengths, batch_size, seed, group_by_length=True):
        self.lengths, self.batch_size, self.seed, self.epoch = np.asarray(lengths), batch_size, seed, 0
        self.group = 50 if group_by_length else 1

    def __len__(self):
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.lengths))
        group = self.group * self.batch_size
        order = np.concatenate([g[np.argsort(-self.lengths[g], kind="stable")]
                                for g in np.split(order, range(group, len(order), group))])
        batches = [order[i:i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        yield from (batches[i] for i in rng.permutation(len(batches)))


def history_windows(rows, step, length):
    """Cut each history into windows of `length` items ending at s[-1], s[-1 - step], ...

    With step = max_seq_len and length = step + 1 (causal) or step (cloze), every item of a long
    history is a target once per epoch, instead of only its most recent max_seq_len items.
    """
    def cut(batch):
        out = {"input_ids": [], "event_type_ids": []}
        for items, events in zip(batch["input_ids"], batch["event_type_ids"], strict=True):
            for end in range(len(items), length - step, -step):  # a causal window needs 2 items
                out["input_ids"].append(items[max(0, end - length):end])
                out["event_type_ids"].append(events[max(0, end - length):end])
        return out

    return rows.map(cut, batched=True, remove_columns=rows.column_names, keep_in_memory=True)


class TrainState:
    """Counters saved with `save_state`, so --resume continues where the run stopped."""

    def __init__(self):
        self.epoch, self.step, self.best_ndcg, self.evals_without_gain = 0, 0, -1.0, 0
        self.train_seconds = 0.0  # summed over resumed runs, evaluation excluded

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)


def train(run):
    accelerator = Accelerator(
        mixed_precision=run.mixed_precision, gradient_accumulation_steps=run.gradient_accumulation_steps,
        log_with=[t for t in run.report_to.split(",") if t] or None,
        project_config=ProjectConfiguration(project_dir=run.output_dir, automatic_checkpoint_naming=True,
                                            total_limit=1))
    if run.num_threads:
        torch.set_num_threads(run.num_threads)
    set_seed(run.seed)
    data, items, events = load_prepared(run.data)
    config = build_model_config(run, len(items), len(events) if run.use_event_types else 0)
    model = MODEL_FAMILIES[run.model_type][1](config)
    collator = training_collator(config, run.seed)
    train_rows = data["train"].select_columns(["input_ids", "event_type_ids"])
    if run.full_history:
        train_rows = history_windows(train_rows, run.max_seq_len, run.max_seq_len + int(config.is_causal))
    batches = LengthGroupedBatches([len(x) for x in train_rows["input_ids"]], run.batch_size, run.seed,
                                   run.group_by_length)
    train_rows = train_rows.with_format("numpy")
    train_loader = DataLoader(train_rows, batch_sampler=batches, collate_fn=collator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.learning_rate, weight_decay=run.weight_decay,
                                  betas=(0.9, 0.98))
    # accelerate steps a prepared scheduler once per process for every optimizer step, so the
    # schedule is counted in per-process batches: warm-up `warmup_steps` optimizer steps either way.
    steps_per_epoch = math.ceil(len(batches) / run.gradient_accumulation_steps)
    decay = {"num_decay_steps": run.decay_epochs * steps_per_epoch,
             "decay_type": "linear"} if run.decay_epochs else None
    scheduler = get_scheduler(run.lr_scheduler_type, optimizer,
                              num_warmup_steps=run.warmup_steps * accelerator.num_processes,
                              num_training_steps=run.num_epochs * steps_per_epoch,
                              scheduler_specific_kwargs=decay)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    state = TrainState()
    accelerator.register_for_checkpointing(state, collator)
    if run.resume:
        resume_from(accelerator, run.output_dir, config)
    effective = {"run": run.to_dict(), "model": config.to_diff_dict(), "processes": accelerator.num_processes}
    if accelerator.is_main_process:
        print(json.dumps(effective, indent=2))
    accelerator.init_trackers("hfseqrec", config={k: v for k, v in run.to_dict().items() if k != "model"})
    log_file = os.path.join(run.output_dir, "log.jsonl")
    start, first_epoch = time.time(), state.epoch

    for epoch in range(state.epoch, run.num_epochs):
        batches.epoch = epoch
        model.train()
        epoch_start, tokens, loss_sum = time.time(), 0, 0.0
        for batch in tqdm(train_loader, desc=f"epoch {epoch + 1}", disable=not accelerator.is_local_main_process,
                          leave=False, file=sys.stderr):
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and run.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), run.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state.step += int(accelerator.sync_gradients)
            tokens += int((batch["labels"] != -100).sum())
            loss_sum += loss.item()
        state.epoch = epoch + 1
        seconds = time.time() - epoch_start
        state.train_seconds += seconds
        tokens = accelerator.gather(torch.tensor([tokens], device=accelerator.device)).tolist()  # per process
        record = {"epoch": state.epoch, "step": state.step, "train_loss": loss_sum / len(train_loader),
                  "lr": scheduler.get_last_lr()[0], "epoch_seconds": seconds, "train_tokens": tokens,
                  "train_tokens_per_second": sum(tokens) / seconds, "elapsed_seconds": time.time() - start}
        if state.epoch % run.eval_every == 0 or state.epoch == run.num_epochs:
            with full_precision(accelerator.unwrap_model(model)) as plain:
                metrics = evaluate_model(plain, data, "validation", accelerator, run.ks, run.exclude_seen,
                                         run.eval_batch_size, with_popularity=False)
            record.update({f"validation/{k}": v for k, v in metrics.items() if "@" in k})
            if metrics["ndcg@10"] > state.best_ndcg:
                state.best_ndcg, state.evals_without_gain = metrics["ndcg@10"], 0
                if accelerator.is_main_process:
                    save_checkpoint(accelerator.unwrap_model(model), run.output_dir, items, events, effective)
            else:
                state.evals_without_gain += 1
        accelerator.save_state()
        if accelerator.is_main_process:
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in record.items() if "@" not in k or k.endswith("@10")), file=sys.stderr)
        accelerator.log(record, step=state.step)
        if state.evals_without_gain >= run.patience:
            break
        if run.max_minutes:  # one verdict for all processes, or a rank would wait for the others forever
            late = torch.tensor([time.time() - start > 60 * run.max_minutes], device=accelerator.device)
            if accelerator.reduce(late.int(), reduction="sum").item():
                break
        if run.stop_after_epochs and state.epoch - first_epoch >= run.stop_after_epochs:
            end_training(accelerator)
            return None

    accelerator.wait_for_everyone()
    best = load_checkpoint(run.output_dir)
    results = {split: evaluate_model(best, data, split, accelerator, run.ks, run.exclude_seen,
                                     run.eval_batch_size) for split in ("validation", "test")}
    results.update(epochs=state.epoch, train_seconds=state.train_seconds, dataset=data_summary(run.data))
    if accelerator.is_main_process:
        save_checkpoint(best, run.output_dir, items, events, effective, results)
    end_training(accelerator)
    return results


def end_training(accelerator):
    """accelerator.end_training(), after letting gloo's worker threads finish with the last collective.

    A worker thread may still hold the last reference to the tensors of the final gather, and
    dropping it needs the GIL. If the process group is torn down first (when the DDP model is freed,
    holding the GIL) the process hangs for good (pytorch/pytorch#56297; about 1 run in 6 of the
    two-process test). Waiting in a barrier, and then briefly, releases the GIL until they are done.
    """
    if accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
        time.sleep(0.1)
    accelerator.end_training()


@contextlib.contextmanager
def full_precision(model):
    """Validate in fp32, as the final evaluation does (bf16 scores rank ~0.003 NDCG@10 lower).

    Under mixed precision accelerate wraps `model.forward` in autocast and keeps the plain one as
    `_original_forward`; swap it in for the block and put the wrapper back for training.
    """
    wrapped, plain = model.__dict__.get("forward"), model.__dict__.get("_original_forward")
    if plain is not None:
        model.forward = plain
    try:
        yield model
    finally:
        if plain is not None:
            model.forward = wrapped


# Model config fields that set parameter shapes: resuming with another value cannot load the state.
SHAPE_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "num_event_types", "cell")


def resume_from(accelerator, output_dir, config):
    """Load the latest `save_state` folder; the next save then gets the next number."""
    folder = os.path.join(output_dir, "checkpoints")
    saved = sorted((int(n.rsplit("_", 1)[1]) for n in os.listdir(folder) if n.startswith("checkpoint_"))
                   if os.path.isdir(folder) else [])
    if not saved:
        raise HfSeqRecError(f"--resume: nothing to resume in {folder} (no checkpoint_N saved by an earlier run)")
    # Run fields (schedule, epochs) may change on resume; the model's shape may not. Say which field
    # differs rather than fail inside load_state with a tensor size mismatch.
    before = (read_json(output_dir, TRAINING_CONFIG_FILE) or {}).get("model")
    if before:
        before = type(config).from_dict(before)
        changed = [f"{k} {getattr(config, k)} (saved: {getattr(before, k, None)})" for k in SHAPE_FIELDS
                   if getattr(config, k, None) != getattr(before, k, None)]
        if changed:
            raise HfSeqRecError(f"--resume: the model differs from the one saved in {output_dir}: "
                                + ", ".join(changed))
    accelerator.load_state(os.path.join(folder, f"checkpoint_{saved[-1]}"))
    accelerator.project_configuration.iteration = saved[-1] + 1


def data_summary(data_dir):
    """The prepare report's statistics, for the metrics file and the model card."""
    report = read_json(data_dir, REPORT_FILE) or {}
    return {k: report[k] for k in ("users", "items", "interactions", "inputs", "format") if k in report}


EXTRA_FLAGS = True  # the CLI passes unknown --field value pairs on as run config overrides


def add_arguments(parser):
    parser.add_argument("--config", help="YAML run config (see configs/); flags override its fields")
    parser.epilog = "Any run field is a flag: --num_epochs 3, --model.hidden_size 128, --resume true."


def run(args):
    run_config = load_run_config(args.config, args.overrides)
    results = train(run_config)
    if results is not None and PartialState().is_main_process:
        print(json.dumps({split: {k: results[split][k] for k in ("ndcg@10", "hr@10", "mrr@10")}
                          for split in ("validation", "test")} | {"popularity_test_ndcg@10":
                          results["test"]["popularity"]["ndcg@10"], "output_dir": run_config.output_dir}))

