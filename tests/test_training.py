"""Training, collators, metrics and evaluation: behaviour on tiny generated data, CPU only."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from datasets import Dataset

from hfseqrec import SASRecConfig, SASRecForNextItemPrediction
from hfseqrec.cli import main
from hfseqrec.collators import IGNORE_INDEX, CausalCollator, ClozeCollator, EvalCollator
from hfseqrec.errors import HfSeqRecError
from hfseqrec.metrics import coverage, metrics_from_ranks, target_ranks, top_k_items
from hfseqrec.run_config import load_run_config
from hfseqrec.sequences import load_prepared, prepare
from hfseqrec.synth import generate, write
from hfseqrec.training import LengthGroupedBatches, full_precision, history_windows, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.yaml")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    write(generate(users=120, items=40, events_per_user_mean=12, seed=3), str(folder / "log.csv"))
    prepare([str(folder / "log.csv")], str(folder / "prepared"), min_item_interactions=2)
    return str(folder / "prepared")


def tiny_run(data_dir, out, *overrides):
    return load_run_config(TINY, ["--data", data_dir, "--output_dir", str(out), *overrides])


# --- metrics: hand-computed -------------------------------------------------------------------

def test_ranks_are_pessimistic_on_ties_and_ignore_excluded_items():
    scores = torch.tensor([[0.0, 0.0, 0.0, 5.0, 3.0, 3.0, 1.0],    # target 4 ties with 5: rank 1 + 1
                           [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],    # a constant scorer: last of 4 items
                           [0.0, 0.0, 0.0, 9.0, 8.0, 2.0, 7.0]])   # 3 and 4 seen: target 6 first
    targets = torch.tensor([4, 3, 6])
    exclude = torch.tensor([[0, 0], [0, 0], [3, 4]])
    assert target_ranks(scores, targets).tolist() == [2, 3, 2]
    assert target_ranks(scores, targets, exclude).tolist() == [2, 3, 0]


def test_seen_filtering_never_hides_the_target():
    scores = torch.tensor([[0.0, 0.0, 0.0, 1.0, 4.0, 2.0]])
    # the target 4 was also seen (a repeat): it keeps its score; 5 is seen and drops out
    assert target_ranks(scores, torch.tensor([4]), torch.tensor([[4, 5]])).tolist() == [0]
    assert target_ranks(scores, torch.tensor([3]), torch.tensor([[4, 5]])).tolist() == [0]
    assert target_ranks(scores, torch.tensor([3]), torch.tensor([[5, 5]])).tolist() == [1]


def test_metrics_from_ranks_match_hand_computed_values():
    m = metrics_from_ranks([0, 1, 4, 10], ks=(1, 5, 10))
    assert m["hr@1"] == pytest.approx(1 / 4)
    assert m["hr@5"] == pytest.approx(3 / 4)
    assert m["hr@10"] == pytest.approx(3 / 4)  # rank 10 is the 11th place
    assert m["ndcg@5"] == pytest.approx((1 + 1 / 1.5849625007211563 + 1 / 2.584962500721156) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 4)
    assert m["ndcg@1"] == pytest.approx(1 / 4)


def test_top_k_and_coverage():
    scores = torch.tensor([[0.0, 0.0, 0.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 5.0, 1.0, 1.0]])
    top = top_k_items(scores, 2, exclude=torch.tensor([[0], [3]]))
    assert top.tolist() == [[4, 5], [4, 5]]  # equal scores: the lower id first
    assert coverage(top, num_items=3, num_special_tokens=3) == pytest.approx(2 / 3)


def test_evaluate_module_loads_offline_and_matches():
    import evaluate

    metric = evaluate.load(os.path.join(ROOT, "hfseqrec", "metrics_hub", "next_item_ranking"))
    out = metric.compute(predictions=[[5, 9, 2], [1, 2, 3], [7, 8, 4]], references=[9, 4, 7], k=2)
    assert out["hr@2"] == pytest.approx(2 / 3)
    assert out["ndcg@2"] == pytest.approx((1 / 1.5849625007211563 + 1) / 3)


# --- collators: the objective --------------------------------------------------------------------

ROWS = [{"input_ids": [5, 6, 7, 8, 9], "event_type_ids": [2, 3, 2, 2, 4], "label": 11},
        {"input_ids": [10, 11], "event_type_ids": [2, 2], "label": 5}]


def test_causal_collator_shifts_by_one_and_keeps_the_window():
    config = SASRecConfig(vocab_size=20, max_position_embeddings=3)
    batch = CausalCollator(config, seed=0)(ROWS)
    assert batch["input_ids"].tolist() == [[6, 7, 8], [10, 0, 0]]
    assert batch["labels"].tolist() == [[7, 8, 9], [11, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["event_type_ids"].tolist() == [[3, 2, 2], [2, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert "negative_ids" not in batch
    config.loss, config.num_negatives = "bce", 4
    negatives = CausalCollator(config, seed=0)(ROWS)["negative_ids"]
    assert negatives.shape == (4,) and negatives.min() >= 3 and negatives.max() < 20


def test_cloze_collator_masks_as_specified_and_is_seeded():
    config = SASRecConfig(vocab_size=20, max_position_embeddings=4, is_causal=False)
    config.mask_probability = 0.5
    a, b = ClozeCollator(config, seed=1)(ROWS), ClozeCollator(config, seed=1)(ROWS)
    assert torch.equal(a["input_ids"], b["input_ids"])  # same seed, same masks
    original = torch.tensor([[6, 7, 8, 9], [10, 11, 0, 0]])
    masked = a["input_ids"] == config.mask_token_id
    assert masked.any(1).all()  # every row teaches something
    assert torch.equal(a["labels"][masked], original[masked])
    assert (a["labels"][~masked] == IGNORE_INDEX).all()
    assert torch.equal(a["input_ids"][~masked], original[~masked])
    assert (a["event_type_ids"][masked] == 0).all()
    assert not masked[1, 2:].any()  # padding is never masked


def test_eval_collator_appends_mask_for_bert4rec_and_keeps_full_history_as_seen():
    causal = EvalCollator(SASRecConfig(vocab_size=20, max_position_embeddings=3))(ROWS)
    assert causal["input_ids"].tolist() == [[7, 8, 9], [10, 11, 0]]
    assert causal["labels"].tolist() == [11, 5]
    assert causal["seen"].tolist() == [[5, 6, 7, 8, 9], [10, 11, 0, 0, 0]]
    masked = EvalCollator(SASRecConfig(vocab_size=20, max_position_embeddings=3, is_causal=False))(ROWS)
    assert masked["input_ids"].tolist() == [[8, 9, 1], [10, 11, 1]]


def test_history_windows_make_every_item_a_target_once():
    rows = Dataset.from_dict({"input_ids": [list(range(3, 14)), [3, 4], [7]],
                              "event_type_ids": [[2] * 11, [2, 2], [2]]})
    causal = history_windows(rows, step=4, length=5)["input_ids"]
    assert causal == [[9, 10, 11, 12, 13], [5, 6, 7, 8, 9], [3, 4, 5], [3, 4]]  # [7] has no target
    batch = CausalCollator(SASRecConfig(vocab_size=20, max_position_embeddings=4), seed=0)(
        [{"input_ids": w, "event_type_ids": [2] * len(w)} for w in causal])
    assert sorted(batch["labels"][batch["labels"] != IGNORE_INDEX].tolist()) == sorted([*range(4, 14), 4])
    cloze = history_windows(rows, step=4, length=4)["input_ids"]
    assert cloze == [[10, 11, 12, 13], [6, 7, 8, 9], [3, 4, 5], [3, 4], [7]]


# --- training and evaluation ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    results = train(tiny_run(data_dir, out))
    return out, results


def test_training_saves_a_checkpoint_with_metrics(trained):
    out, results = trained
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer.json", "event_vocab.json",
            "training_config.json", "metrics.json", "log.jsonl"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert {"ndcg@10", "hr@10", "mrr@10", "coverage@10", "users", "popularity"} <= set(metrics[split])
    assert metrics["test"]["users"] == len(load_prepared(trained_data(out))[0]["test"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, len(log) + 1))
    assert results["test"]["ndcg@10"] == metrics["test"]["ndcg@10"]


def test_warmup_stable_decay_holds_the_rate_then_decays_to_zero(data_dir, tmp_path):
    train(tiny_run(data_dir, tmp_path, "--num_epochs", "4", "--patience", "9",
                   "--lr_scheduler_type", "warmup_stable_decay", "--decay_epochs", "2"))
    rates = [json.loads(line)["lr"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    peak = load_run_config(TINY, ["--data", data_dir]).learning_rate
    assert rates[:2] == [peak, peak] and rates[2] == pytest.approx(peak / 2) and rates[3] == 0
    with pytest.raises(HfSeqRecError, match="decay_epochs"):
        tiny_run(data_dir, tmp_path, "--decay_epochs", "2")  # only with warmup_stable_decay


def test_validation_under_bf16_training_runs_in_fp32_and_training_stays_bf16():
    torch.manual_seed(0)
    model = SASRecForNextItemPrediction(SASRecConfig(vocab_size=300, hidden_size=32, num_attention_heads=1,
                                                     intermediate_size=32, max_position_embeddings=8)).eval()
    ids = torch.randint(3, 300, (4, 8))
    fp32 = model(ids).logits
    AcceleratorState._reset_state(reset_partial_state=True)  # the other tests' runs are fp32
    try:
        accelerator = Accelerator(mixed_precision="bf16", cpu=True)
        prepared = accelerator.prepare(model)
        unwrapped = accelerator.unwrap_model(prepared)
        assert not torch.equal(unwrapped(ids).logits, fp32)  # autocast: bf16 matmuls
        with full_precision(unwrapped) as plain:
            assert torch.equal(plain(ids).logits, fp32)
        assert torch.equal(unwrapped(ids).logits, prepared(ids).logits)  # the autocast wrapper is back
        assert not torch.equal(prepared(ids).logits, fp32)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def trained_data(out):
    return json.loads((out / "training_config.json").read_text())["run"]["data"]


def test_evaluation_is_the_same_for_any_batch_size(trained, capsys):
    out, results = trained
    data = trained_data(out)
    seen = []
    for batch_size in ("1", "7", "500"):
        assert main(["evaluate", "--model", str(out), "--data", data, "--batch-size", batch_size]) == 0
        seen.append(json.loads(capsys.readouterr().out))
    assert seen[0] == seen[1] == seen[2]
    assert seen[0]["ndcg@10"] == pytest.approx(results["test"]["ndcg@10"])
    assert {"ndcg@10", "hr@10", "mrr@10"} <= set(seen[0]) and "popularity" in seen[0]


def test_resume_reproduces_the_uninterrupted_run(data_dir, tmp_path):
    straight = train(tiny_run(data_dir, tmp_path / "a", "--patience", "10", "--model.loss", "bce"))
    assert train(tiny_run(data_dir, tmp_path / "b", "--patience", "10", "--model.loss", "bce",
                          "--stop_after_epochs", "2")) is None
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    resumed = train(tiny_run(data_dir, tmp_path / "b", "--patience", "10", "--model.loss", "bce", "--resume"))
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert resumed["epochs"] == straight["epochs"] == 3
    for split in ("validation", "test"):
        assert resumed[split]["ndcg@10"] == pytest.approx(straight[split]["ndcg@10"], abs=1e-6)
        assert resumed[split]["hr@10"] == pytest.approx(straight[split]["hr@10"], abs=1e-6)


def test_max_minutes_stops_after_the_epoch_that_ran_out_and_keeps_the_best_model(data_dir, tmp_path):
    results = train(tiny_run(data_dir, tmp_path, "--num_epochs", "5", "--max_minutes", "1e-6"))
    assert results["epochs"] == 1
    assert (tmp_path / "model.safetensors").exists() and results["test"]["ndcg@10"] >= 0


@pytest.mark.parametrize("model_type,extra", [("bert4rec", []),
                                              ("gru4rec", ["--model", "{}"])])
def test_every_family_trains(data_dir, tmp_path, model_type, extra):
    overrides = ["--model_type", model_type, "--num_epochs", "1", *extra]
    if model_type == "gru4rec":  # the tiny YAML's attention fields do not apply to a recurrent model
        overrides += ["--model.hidden_size", "16"]
    results = train(tiny_run(data_dir, tmp_path, *overrides))
    assert 0 <= results["test"]["ndcg@10"] <= 1


def test_full_history_trains_on_every_item_of_long_histories(data_dir, tmp_path):
    train(tiny_run(data_dir, tmp_path, "--num_epochs", "1", "--max_seq_len", "4", "--full_history", "true"))
    with open(tmp_path / "log.jsonl") as f:
        tokens = json.loads(f.readline())["train_tokens"]
    data, _, _ = load_prepared(data_dir)
    assert tokens == [sum(len(s) - 1 for s in data["train"]["input_ids"])]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def descendants(pid):
    """Every process below `pid`, from /proc parent links (Linux)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_two_real_processes_train_and_save_once(data_dir, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", free_port(),
           "-m", "hfseqrec", "train", "--config", TINY, "--data", data_dir, "--output_dir", str(out),
           "--num_epochs", "2"]
    proc = subprocess.Popen(cmd, env={**env, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        # torchrun starts each rank in its own session, so kill the whole tree by parent links:
        # SIGABRT first (faulthandler prints where each rank waits), then SIGKILL what is left.
        tree = descendants(proc.pid) + [proc.pid]
        for sig in (signal.SIGABRT, signal.SIGKILL):
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(3)
        _, stderr = proc.communicate(timeout=60)
        pytest.fail("two-process training hung:\n" + stderr[-6000:])
    assert proc.returncode == 0, stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2  # written once, by the main process
    assert all(len(r["train_tokens"]) == 2 and min(r["train_tokens"]) > 0 for r in log)  # both ranks trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["users"] == len(load_prepared(data_dir)[0]["test"])  # every user, once
    assert sorted(f for f in os.listdir(out) if f.endswith(".safetensors")) == ["model.safetensors"]
    assert json.loads((out / "training_config.json").read_text())["processes"] == 2


# --- bad input: one clear line each --------------------------------------------------------------

def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_unknown_config_key_is_named(capsys, tmp_path, data_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_type: sasrec\nnum_epoch: 3\n")
    assert "num_epoch" in one_line_error(capsys, ["train", "--config", str(bad), "--data", data_dir])
    assert "model.hiden_size" in one_line_error(capsys, ["train", "--config", TINY, "--data", data_dir,
                                                         "--model.hiden_size", "8"])
    assert "batch_size" in one_line_error(capsys, ["train", "--config", TINY, "--data", data_dir,
                                                   "--batch_size", "big"])
    assert "num_attention_heads" in one_line_error(capsys, ["train", "--config", TINY, "--data", data_dir,
                                                            "--model.num_attention_heads", "3"])


def test_missing_data_directory(capsys, tmp_path):
    err = one_line_error(capsys, ["train", "--config", TINY, "--data", str(tmp_path / "nope"),
                                  "--output_dir", str(tmp_path / "o")])
    assert "nope" in err


def test_checkpoint_directory_that_is_not_one(capsys, tmp_path, data_dir):
    err = one_line_error(capsys, ["evaluate", "--model", str(tmp_path), "--data", data_dir])
    assert str(tmp_path) in err and "config.json" in err
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    assert "hfseqrec" in one_line_error(capsys, ["evaluate", "--model", str(tmp_path), "--data", data_dir])


def test_resume_with_nothing_to_resume(capsys, tmp_path, data_dir):
    err = one_line_error(capsys, ["train", "--config", TINY, "--data", data_dir,
                                  "--output_dir", str(tmp_path / "fresh"), "--resume"])
    assert "nothing to resume" in err


def test_resume_with_another_model_shape_names_the_field(capsys, tmp_path, data_dir):
    assert train(tiny_run(data_dir, tmp_path, "--num_epochs", "2", "--stop_after_epochs", "1")) is None
    capsys.readouterr()  # the first run's progress bars
    err = one_line_error(capsys, ["train", "--config", TINY, "--data", data_dir, "--output_dir", str(tmp_path),
                                  "--num_epochs", "2", "--resume", "--model.hidden_size", "32"])
    assert "hidden_size 32" in err and "saved" in err


@pytest.mark.parametrize("recipe", sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".yaml")))
def test_every_recipe_is_a_valid_run_config_headed_by_its_command(recipe):
    path = os.path.join(ROOT, "configs", recipe)
    text = open(path).read()
    assert text.startswith("#") and "Command:" in text and "Reached:" in text
    run = load_run_config(path, ["--data", "somewhere"])
    assert run.model_type in ("sasrec", "bert4rec", "gru4rec")


def test_evaluating_on_data_with_another_vocabulary_is_refused(capsys, trained, tmp_path):
    out, _ = trained
    write(generate(users=60, items=30, events_per_user_mean=10, seed=9), str(tmp_path / "other.csv"))
    prepare([str(tmp_path / "other.csv")], str(tmp_path / "other"), min_item_interactions=2)
    capsys.readouterr()  # prepare's own progress output
    assert "vocabulary" in one_line_error(capsys, ["evaluate", "--model", str(out), "--data", str(tmp_path / "other")])


LENGTHS = torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(0)).tolist()


@pytest.mark.parametrize("group_by_length", [True, False])
def test_batches_cover_every_row_once_per_epoch_and_depend_only_on_seed_and_epoch(group_by_length):
    batches = LengthGroupedBatches(LENGTHS, 32, seed=3, group_by_length=group_by_length)
    first = list(batches)
    assert len(first) == len(batches) == 32  # ceil(1000 / 32)
    assert sorted(i for b in first for i in b) == list(range(1000))
    assert list(LengthGroupedBatches(LENGTHS, 32, seed=3, group_by_length=group_by_length)) == first
    batches.epoch = 1
    assert list(batches) != first


def test_grouping_by_length_is_what_saves_the_padding():
    def padding(bs):  # padded positions when each batch is padded to its longest row
        return sum(max(LENGTHS[i] for i in b) * len(b) - sum(LENGTHS[i] for i in b) for b in bs)

    grouped, plain = (LengthGroupedBatches(LENGTHS, 32, 3, group_by_length=g) for g in (True, False))
    assert padding(grouped) < padding(plain) / 5
