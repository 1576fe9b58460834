"""Checkpoint stage, the card: metrics + run configuration -> README.md, a Hugging Face model card.

`write_model_card(out_dir, model_config, metrics, training_config)` renders
`model_cards/hfseqrec_model_card.md` (Jinja; packaged as hfseqrec/templates/, a link to it) with
huggingface_hub's `ModelCard`: YAML metadata (library, tags, the measured metrics as `model-index`
eval results), the data and its statistics, the split and protocol in words, validation and test
figures with the popularity baseline beside them, intended use and limits, and the command that
reproduces the run. `save_checkpoint` calls it whenever metrics are given.
"""

import json
import os
import shlex
from importlib import resources

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = "hfseqrec_model_card.md"
TASK = "next-item-recommendation"
FAMILIES = {  # model_type -> (display name, one line on how it reads a history)
    "sasrec": ("SASRec", "SASRec (Kang & McAuley, 2018) reads the history with causal self-attention."),
    "bert4rec": ("BERT4Rec", "BERT4Rec (Sun et al., 2019) reads the history with bidirectional "
                 "self-attention and predicts the item at an appended [MASK]."),
    "gru4rec": ("GRU4Rec", "GRU4Rec (Hidasi et al., 2016) reads the history with a recurrent network."),
}
METRIC_NAMES = {"hr": "HR", "ndcg": "NDCG", "mrr": "MRR", "coverage": "Coverage"}


def template_path():
    return str(resources.files("hfseqrec") / "templates" / TEMPLATE)


def cut_offs(split_metrics):
    """{"ndcg@10": ..., "hr@5": ...} -> sorted cut-offs [5, 10]."""
    return sorted({int(key.split("@")[1]) for key in split_metrics if key.startswith("ndcg@")})


def results_table(metrics):
    """Markdown table: one row per metric@k, model and popularity on validation and test."""
    rows = ["| metric | validation | popularity (validation) | test | popularity (test) |",
            "|---|---|---|---|---|"]
    validation, test = metrics["validation"], metrics["test"]
    for k in cut_offs(test):
        for name, label in METRIC_NAMES.items():
            key = f"{name}@{k}"
            if key not in test:
                continue
            cells = [split.get(key) for split in (validation, validation.get("popularity", {}),
                                                  test, test.get("popularity", {}))]
            rows.append(f"| {label}@{k} | " + " | ".join("–" if c is None else f"{c:.4f}" for c in cells) + " |")
    users = ", ".join(f"{split} {metrics[split]['users']:,} users" for split in ("validation", "test")
                      if "users" in metrics[split])
    return "\n".join(rows) + (f"\n\nEvaluated on {users}." if users else "")


def eval_results(metrics, dataset_name, dataset_type):
    """HR/NDCG/MRR at every cut-off on the test split and @10 on validation, for `model-index`."""
    results = []
    for split in ("test", "validation"):
        ks = cut_offs(metrics[split]) if split == "test" else [10]
        for k in ks:
            for name in ("hr", "ndcg", "mrr"):
                value = metrics[split].get(f"{name}@{k}")
                if value is not None:
                    results.append(EvalResult(
                        task_type=TASK, task_name="Next-item recommendation", dataset_type=dataset_type,
                        dataset_name=dataset_name, dataset_split=split, metric_type=name,
                        metric_name=f"{METRIC_NAMES[name]}@{k}", metric_value=round(value, 6),
                        metric_args={"k": k}))
    return results


def reproduce_command(training_config):
    """The `hfseqrec train` command line for the saved run fields (only those off their default)."""
    from .run_config import RunConfig

    if not training_config or "run" not in training_config:
        return "# training_config.json holds no run fields: the command is unknown"
    run, defaults = training_config["run"], RunConfig().to_dict()
    flags = []
    for key, value in run.items():
        if key == "model":
            flags += [f"--model.{k} {_flag(v)}" for k, v in value.items()]
        elif key not in ("resume",) and value != defaults.get(key):
            flags.append(f"--{key} {_flag(value)}")
    processes = training_config.get("processes", 1)
    launcher = (f"accelerate launch --multi_gpu --num_processes {processes} -m hfseqrec train"
                if processes > 1 else "hfseqrec train")
    return " \\\n    ".join([launcher, *flags])


def _duration(seconds):
    if seconds is None:
        return "an unrecorded time"
    return f"{seconds:.0f} seconds" if seconds < 120 else f"{seconds / 60:.1f} minutes"


def _flag(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return shlex.quote(json.dumps(value) if isinstance(value, (list, dict)) else str(value))


def example_history(out_dir, n=3):
    """A few real item IDs from the checkpoint's vocabulary, for the usage snippet."""
    try:
        with open(os.path.join(out_dir, "tokenizer.json")) as f:
            vocab = json.load(f)["model"]["vocab"]
        with open(os.path.join(out_dir, "tokenizer_config.json")) as f:
            as_int = json.load(f).get("item_id_type") == "int"
    except (OSError, KeyError, ValueError):
        return ["item_a", "item_b"]
    items = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if not token.startswith("[")][:n]
    return [int(t) for t in items] if as_int else items


def build_model_card(out_dir, model_config, metrics, training_config=None, num_parameters=None):
    model_type = model_config.model_type
    family, family_description = FAMILIES.get(model_type, (model_type, ""))
    dataset = metrics.get("dataset", {})
    inputs = dataset.get("inputs") or []
    dataset_name = ", ".join(os.path.basename(str(p).rstrip("/")) for p in inputs) or "custom behaviour log"
    run = (training_config or {}).get("run", {})
    model_name = f"hfseqrec-{model_type}-{os.path.basename(os.path.abspath(out_dir))}"
    card_data = ModelCardData(
        library_name="transformers", model_name=model_name,
        tags=["sequential-recommendation", TASK, "hfseqrec", model_type, "recommendation"],
        metrics=["hr", "ndcg", "mrr"],
        eval_results=eval_results(metrics, dataset_name, "hfseqrec-leave-one-out"))
    history = example_history(out_dir)
    event_names = None
    if getattr(model_config, "num_event_types", 0):
        try:
            with open(os.path.join(out_dir, "event_vocab.json")) as f:
                event_names = ", ".join(json.load(f)["names"][2:])
        except (OSError, KeyError, ValueError):
            event_names = None
    fmt = dataset.get("format")
    description = (f"Trained on {dataset_name}" + (f" ({fmt})" if fmt else "")
                   + (f", prepared with `hfseqrec prepare` into `{run['data']}`" if run.get("data") else "")
                   + ". Users and items with too few interactions were dropped before the split.")
    test = metrics["test"]
    return ModelCard.from_template(
        card_data, template_path=template_path(),
        model_name=model_name,  # eval_results move model_name into model-index: pass it explicitly
        model_id=os.path.basename(os.path.abspath(out_dir)), family=family,
        family_description=family_description, model_type=model_type,
        example_history=json.dumps(history), example_history_flat=",".join(map(str, history)),
        event_types=event_names, hidden_size=model_config.hidden_size,
        num_layers=model_config.num_hidden_layers, heads=getattr(model_config, "num_attention_heads", None),
        window=model_config.max_position_embeddings, num_special_tokens=model_config.num_special_tokens,
        num_items=model_config.vocab_size - model_config.num_special_tokens, loss=model_config.loss,
        num_parameters=f"{num_parameters:,}" if num_parameters else "–",
        dataset_description=description, users=f"{dataset.get('users', '–'):,}" if "users" in dataset else "–",
        items=f"{dataset['items']:,}" if "items" in dataset else "–",
        interactions=f"{dataset['interactions']:,}" if "interactions" in dataset else "–",
        protocol=test.get("protocol", "leave-one-out, full ranking"),
        results_table=results_table(metrics), epochs=metrics.get("epochs", "–"),
        train_time=_duration(metrics.get("train_seconds")),
        reproduce=reproduce_command(training_config))


def write_model_card(out_dir, model_config, metrics, training_config=None, num_parameters=None):
    card = build_model_card(out_dir, model_config, metrics, training_config, num_parameters)
    card.save(os.path.join(out_dir, "README.md"))
    return card
