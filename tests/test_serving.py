"""Serving stage: the model card, the top-k pipeline (in process and as remote code), push, the CLIs.

Tiny models saved with `save_checkpoint` cover the pipeline for every family; one tiny SASRec is
trained for one epoch (module fixture) where real metrics are needed: the card and the push.
"""

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import huggingface_hub
import pytest
import safetensors
import tokenizers
import torch
import transformers
from huggingface_hub import HfApi, ModelCard

import hfseqrec
from hfseqrec import MODEL_FAMILIES
from hfseqrec.checkpoint import save_checkpoint
from hfseqrec.cli import main
from hfseqrec.hub import IGNORE_PATTERNS
from hfseqrec.model_card import template_path
from hfseqrec.recommend import build_pipeline
from hfseqrec.vocabulary import EventVocabulary, ItemVocabulary

FAMILIES = list(MODEL_FAMILIES)
REPO = Path(__file__).resolve().parents[1]
INT_IDS = list(range(100, 130))  # 30 items
STR_IDS = [f"sku-{chr(97 + i)}{i}" for i in range(30)]
WINDOW = 8


def save_tiny(path, family, raw_ids, seed=0, zero=False):
    items = ItemVocabulary.from_items(raw_ids, max_len=WINDOW)
    events = EventVocabulary.from_types(["view", "cart", "purchase"])
    kwargs = dict(vocab_size=len(items), hidden_size=16, num_hidden_layers=1, max_position_embeddings=WINDOW,
                  num_event_types=len(events), hidden_dropout_prob=0.0)
    if family != "gru4rec":
        kwargs.update(num_attention_heads=2, intermediate_size=32, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    model = MODEL_FAMILIES[family][1](transformers.AutoConfig.for_model(family, **kwargs)).eval()
    if zero:  # every item scores 0: the order is decided by tie-breaking alone
        torch.nn.init.zeros_(model.get_output_embeddings().weight)
    save_checkpoint(model, str(path), items, events, training_config={"run": {"model_type": family}})
    return str(path)


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    """family -> {"int": pipeline, "str": pipeline} over tiny checkpoints."""
    root = tmp_path_factory.mktemp("tiny")
    return {family: {kind: build_pipeline(save_tiny(root / f"{family}_{kind}", family, ids))
                     for kind, ids in (("int", INT_IDS), ("str", STR_IDS))} for family in FAMILIES}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SASRec trained for one epoch on synthetic data: (checkpoint dir, metrics)."""
    from hfseqrec.run_config import load_run_config
    from hfseqrec.sequences import prepare
    from hfseqrec.synth import generate, write
    from hfseqrec.training import train

    root = tmp_path_factory.mktemp("trained")
    write(generate(users=120, items=40, events_per_user_mean=12, seed=0), str(root / "log.csv"))
    prepare([str(root / "log.csv")], str(root / "data"), min_user_interactions=3, min_item_interactions=1,
            max_len=20)
    out = root / "model"
    metrics = train(load_run_config(None, [
        "--data", str(root / "data"), "--output_dir", str(out), "--num_epochs", "1", "--max_seq_len", "20",
        "--batch_size", "64", "--model.hidden_size", "16", "--model.num_hidden_layers", "1",
        "--model.num_attention_heads", "1", "--model.intermediate_size", "32"]))
    return str(out), metrics


def ids_of(result):
    return [r["item_id"] for r in result]


# ---- model card ------------------------------------------------------------------------------------

def test_card_renders_the_measured_metrics_and_reloads(trained):
    out, metrics = trained
    card = ModelCard.load(Path(out) / "README.md")
    assert card.data.library_name == "transformers"
    assert {"sequential-recommendation", "hfseqrec", "sasrec"} <= set(card.data.tags)
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results[("test", "NDCG@10")] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)
    assert results[("test", "HR@10")] == pytest.approx(metrics["test"]["hr@10"], abs=1e-6)
    assert results[("validation", "MRR@10")] == pytest.approx(metrics["validation"]["mrr@10"], abs=1e-6)
    assert card.data.to_dict()["model-index"][0]["name"].startswith("hfseqrec-sasrec-")
    text = card.text
    assert "\n# hfseqrec-sasrec-" in text  # model_name rendered despite eval_results (the §4 pitfall)
    popularity = metrics["test"]["popularity"]
    assert f"| NDCG@10 | {metrics['validation']['ndcg@10']:.4f} |" in text
    assert f"{popularity['ndcg@10']:.4f} |" in text and f"{popularity['coverage@10']:.4f} |" in text
    assert metrics["test"]["protocol"] in text
    assert f"| {metrics['dataset']['users']:,} | {metrics['dataset']['items']:,} |" in text
    assert "hfseqrec train" in text and "--num_epochs 1" in text and "--model.hidden_size 16" in text
    assert 'pipeline("next-item-recommendation"' in text


def test_card_template_has_one_source_of_truth():
    packaged = Path(template_path())
    assert packaged.read_text() == (REPO / "model_cards" / "hfseqrec_model_card.md").read_text()


def test_checkpoint_ships_the_pipeline(trained):
    out, _ = trained
    config = json.loads((Path(out) / "config.json").read_text())
    assert config["custom_pipelines"] == {"next-item-recommendation": {
        "impl": "pipeline_hfseqrec.NextItemRecommendationPipeline", "pt": ["AutoModel"]}}
    shipped = (Path(out) / "pipeline_hfseqrec.py").read_text()
    assert shipped == Path(hfseqrec.pipeline_hfseqrec.__file__).read_text()
    assert "hfseqrec" not in {line.split()[1].split(".")[0] for line in shipped.splitlines()
                              if line.startswith(("import ", "from "))}


# ---- the pipeline ----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_top_k_excludes_seen_items_and_gives_raw_ids(pipes, family):
    for kind, catalog in (("int", INT_IDS), ("str", STR_IDS)):
        pipe = pipes[family][kind]
        history = catalog[3:9] + catalog[:2]
        result = pipe({"history": history}, top_k=len(catalog) - len(history))
        assert not set(ids_of(result)) & set(history)
        assert set(ids_of(result)) == set(catalog) - set(history)  # raw IDs of the right type
        scores = [r["score"] for r in result]
        assert scores == sorted(scores, reverse=True) and all(isinstance(s, float) for s in scores)
        everything = pipe({"history": history}, top_k=len(catalog), exclude_seen=False)
        assert set(ids_of(everything)) == set(catalog)
        # seen items that fall out of the window are still excluded
        assert len(pipe({"history": catalog[:20]}, top_k=10)) == 10
        assert not set(ids_of(pipe({"history": catalog[:20]}, top_k=10))) & set(catalog[:20])


@pytest.mark.parametrize("family", FAMILIES)
def test_exclude_and_allow(pipes, family):
    pipe = pipes[family]["int"]
    history = [101, 102, 103]
    allow = [101, 110, 111, 112, 113, 120]
    result = pipe({"history": history}, top_k=5, allow=allow, exclude=[113])
    assert set(ids_of(result)) == {110, 111, 112, 120}  # 101 seen, 113 excluded: fewer than k remain
    full = pipe({"history": history}, top_k=10)
    blocked = pipe({"history": history}, top_k=10, exclude=ids_of(full)[:3])
    assert ids_of(blocked)[:7] == ids_of(full)[3:]


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_at_a_time(pipes, family):
    pipe = pipes[family]["str"]
    histories = [{"history": STR_IDS[:3]}, {"history": STR_IDS[5:6]},
                 {"history": STR_IDS[2:25], "event_types": ["view"] * 22 + ["cart"]},
                 {"history": STR_IDS[10:14], "event_types": ["cart", "view", "purchase", "view"]}]
    singles = [pipe(h, top_k=7) for h in histories]
    for batch_size in (1, 4, 3):
        batched = pipe(histories, top_k=7, batch_size=batch_size)
        for one, other in zip(singles, batched, strict=True):
            assert ids_of(one) == ids_of(other)
            torch.testing.assert_close([r["score"] for r in other], [r["score"] for r in one],
                                       atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_long_history_keeps_the_most_recent_window(pipes, family):
    pipe = pipes[family]["int"]
    long = INT_IDS[:25]
    window = WINDOW if pipe.model.config.is_causal else WINDOW - 1  # BERT4Rec keeps room for [MASK]
    assert ids_of(pipe({"history": long}, top_k=30, exclude_seen=False)) == \
        ids_of(pipe({"history": long[-window:]}, top_k=30, exclude_seen=False))


def test_unknown_ids_are_skipped_with_a_warning(pipes, caplog):
    pipe = pipes["sasrec"]["int"]
    with caplog.at_level("WARNING"):
        mixed = pipe({"history": [101, 99999, "nope", 102]})
    assert "2 unknown item ID(s) skipped" in caplog.text
    assert mixed == pipe({"history": [101, 102]})
    assert pipe({"history": ["101", "102"]}) == pipe({"history": [101, 102]})


def test_event_types_change_the_scores(pipes):
    pipe = pipes["sasrec"]["int"]
    plain = pipe({"history": [101, 102, 103]}, top_k=30)
    typed = pipe({"history": [101, 102, 103], "event_types": ["purchase", "cart", "cart"]}, top_k=30)
    assert [r["score"] for r in plain] != [r["score"] for r in typed]


def test_ties_are_broken_by_vocabulary_order(tmp_path):
    pipe = build_pipeline(save_tiny(tmp_path / "flat", "sasrec", STR_IDS, zero=True))
    result = pipe({"history": [STR_IDS[1], STR_IDS[4]]}, top_k=5)
    assert ids_of(result) == [STR_IDS[0], STR_IDS[2], STR_IDS[3], STR_IDS[5], STR_IDS[6]]
    assert pipe([{"history": [STR_IDS[1]]}] * 3, batch_size=2) == [pipe({"history": [STR_IDS[1]]})] * 3


@pytest.mark.parametrize("inputs, options, message", [
    ([101, 102], {}, "must be a dict"),
    ("101", {}, "must be a dict"),
    ({"items": [101]}, {}, "must be a dict"),
    ([], {}, "no histories given"),
    ({"history": []}, {}, "'history' is empty"),
    ({"history": "101,102"}, {}, "'history' must be a list"),
    ({"history": [101, 1.5]}, {}, "'history' must be a list"),
    ({"history": [101], "event_types": ["view", "cart"]}, {}, "'event_types' must be a list of 1"),
    ({"history": [5, 6]}, {}, "none of the 2 history item IDs is in the model's catalog"),
    ({"history": [101]}, {"top_k": 0}, "top_k must be a positive integer"),
    ({"history": [101]}, {"top_k": -3}, "top_k must be a positive integer"),
    ({"history": [101]}, {"top_k": "5"}, "top_k must be a positive integer"),
    ({"history": [101]}, {"top_k": 31}, "top_k=31 is larger than the 30 items"),
    ({"history": [101]}, {"top_k": 3, "allow": [101, 102]}, "top_k=3 is larger than the 2 items"),
    ({"history": [101]}, {"exclude": "101"}, "exclude must be a list"),
    ({"history": [101]}, {"exclude_seen": "no"}, "exclude_seen must be True or False"),
    ({"history": [101]}, {"topk": 3}, "unknown option"),
])
def test_bad_pipeline_input_is_one_clear_error(pipes, inputs, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipes["sasrec"]["int"](inputs, **options)


# ---- remote code: the checkpoint's pipeline where hfseqrec is not installed -------------------------

CHILD = r"""
import json, sys
args = json.loads(sys.argv[1])
sys.path.extend(args["site_packages"])
try:
    import hfseqrec
except ModuleNotFoundError:
    hfseqrec_importable = False
else:
    hfseqrec_importable = True
from transformers import pipeline
report = {"hfseqrec_importable": hfseqrec_importable, "results": {}}
for name, checkpoint in args["checkpoints"].items():
    pipe = pipeline("next-item-recommendation", model=checkpoint, trust_remote_code=True, device="cpu")
    report["pipeline_module"] = type(pipe).__module__
    report["results"][name] = [pipe(request, top_k=5) for request in args["requests"][name]]
    report["results"][name].append(pipe(args["requests"][name], top_k=5))
report["hfseqrec_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "hfseqrec")
with open(args["report"], "w") as f:
    json.dump(report, f)
"""


def test_pipeline_runs_from_the_checkpoint_without_hfseqrec(trained, tmp_path):
    out, _ = trained
    bert = save_tiny(tmp_path / "bert4rec_int", "bert4rec", INT_IDS, seed=3)
    requests = {"trained": [{"history": ["i1", "i2", "i3"]}, {"history": ["i5"], "event_types": ["cart"]}],
                "bert4rec": [{"history": [101, 102, 103]}, {"history": INT_IDS[:20]}]}
    site_packages = sorted({str(Path(m.__file__).parents[1])
                            for m in (torch, transformers, huggingface_hub, safetensors, tokenizers)})
    assert not any((Path(folder) / "hfseqrec").exists() for folder in site_packages)
    report = tmp_path / "report.json"
    args = {"site_packages": site_packages, "checkpoints": {"trained": out, "bert4rec": bert},
            "requests": requests, "report": str(report)}
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "HOME": str(tmp_path),
           "TRANSFORMERS_VERBOSITY": "error"}
    child = subprocess.run([sys.executable, "-I", "-S", "-c", CHILD, json.dumps(args)], cwd=tmp_path, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(report.read_text())
    assert not result["hfseqrec_importable"] and result["hfseqrec_modules"] == []
    assert result["pipeline_module"].startswith("transformers_modules.")
    for name, checkpoint in (("trained", out), ("bert4rec", bert)):
        pipe = build_pipeline(checkpoint)
        expected = [pipe(request, top_k=5) for request in requests[name]]
        expected.append(pipe(requests[name], top_k=5))
        got = result["results"][name]
        for mine, theirs in zip(expected[:-1] + expected[-1], got[:-1] + got[-1], strict=True):  # singles, then the batch
            assert ids_of(theirs) == ids_of(mine)
            assert [r["score"] for r in theirs] == pytest.approx([r["score"] for r in mine], abs=1e-6)
    assert isinstance(result["results"]["bert4rec"][0][0]["item_id"], int)


# ---- push ------------------------------------------------------------------------------------------

def test_push_uploads_exactly_the_checkpoint(trained, tmp_path, capsys):
    out, _ = trained
    assert (Path(out) / "checkpoints").is_dir() and (Path(out) / "log.jsonl").is_file()  # state to keep back
    downloaded = tmp_path / "hub" / "me" / "tiny-sasrec"

    def upload(*args, **kwargs):  # both upload paths of HfApi.upload_folder end here, with the operations
        operations = kwargs.get("add_operations") or kwargs.get("operations")
        for op in operations:
            target = downloaded / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(op.path_or_fileobj, target)
        return mock.MagicMock(commit_url="https://huggingface.co/me/tiny-sasrec/commit/0")

    with mock.patch.object(HfApi, "create_repo", return_value=mock.MagicMock(repo_id="me/tiny-sasrec")) as create, \
            mock.patch.object(HfApi, "_validate_yaml"), \
            mock.patch.object(HfApi, "create_commit", side_effect=upload), \
            mock.patch("huggingface_hub._upload_pipeline.pipelined_upload", side_effect=upload):
        code = main(["push", "--model", out, "--repo-id", "me/tiny-sasrec", "--private"])
    assert code == 0, capsys.readouterr().err
    assert create.call_args.kwargs["private"] is True and create.call_args.kwargs["exist_ok"] is True
    assert json.loads(capsys.readouterr().out)["repo_id"] == "me/tiny-sasrec"
    saved = {p.relative_to(out).as_posix() for p in Path(out).rglob("*") if p.is_file()}
    expected = {p for p in saved if not p.startswith("checkpoints/") and p != "log.jsonl"}
    pushed = {p.relative_to(downloaded).as_posix() for p in downloaded.rglob("*") if p.is_file()}
    assert pushed == expected
    assert {"README.md", "config.json", "model.safetensors", "pipeline_hfseqrec.py", "tokenizer.json",
            "event_vocab.json", "metrics.json", "training_config.json"} <= pushed
    for name in pushed:
        assert (downloaded / name).read_bytes() == (Path(out) / name).read_bytes()
    pipe = build_pipeline(str(downloaded))  # the "downloaded" repo serves the same recommendations
    assert pipe({"history": ["i1", "i2"]}) == build_pipeline(out)({"history": ["i1", "i2"]})
    assert IGNORE_PATTERNS == ["checkpoints/*", "log.jsonl", "*/*"]  # upload_folder did not extend ours


# ---- command lines ---------------------------------------------------------------------------------

def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def test_recommend_cli_prints_titles(trained, tmp_path, capsys):
    out, _ = trained
    csv_file = tmp_path / "items.csv"
    csv_file.write_text("item_id,genre,title\n" + "".join(f"i{i},g,Title {i}\n" for i in range(40)))
    code, stdout, _ = run_cli(capsys, "recommend", "--model", out, "--history", "i1,i2,i3", "--top-k", 4,
                              "--items-file", csv_file, "--event-types", "view,view,cart")
    assert code == 0
    result = json.loads(stdout)
    assert result["history"] == ["i1", "i2", "i3"] and len(result["recommendations"]) == 4
    for item in result["recommendations"]:
        assert item["title"] == f"Title {item['item_id'][1:]}" and item["item_id"] not in ("i1", "i2", "i3")
    assert ids_of(result["recommendations"]) == ids_of(build_pipeline(out)(
        {"history": ["i1", "i2", "i3"], "event_types": ["view", "view", "cart"]}, top_k=4))
    # MovieLens movies.dat(.gz), latin-1, on an int vocabulary; --keep-seen allows history items
    model = save_tiny(tmp_path / "ml", "sasrec", INT_IDS)
    movies = tmp_path / "movies.dat.gz"
    with gzip.open(movies, "wb") as f:
        f.write("".join(f"{i}::Caf\u00e9 {i} (1999)::Drama\n" for i in INT_IDS).encode("latin-1"))
    code, stdout, _ = run_cli(capsys, "recommend", "--model", model, "--history", "101,102", "--top-k", 30,
                              "--items-file", movies, "--keep-seen")
    assert code == 0
    recommendations = json.loads(stdout)["recommendations"]
    assert {r["item_id"] for r in recommendations} == set(INT_IDS)
    assert all(r["title"] == f"Caf\u00e9 {r['item_id']} (1999)" for r in recommendations)


@pytest.fixture
def broken_dirs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json")
    (corrupt / "model.safetensors").write_bytes(b"x")
    (corrupt / "README.md").write_text("card")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (foreign / "model.safetensors").write_bytes(b"x")
    (foreign / "README.md").write_text("card")
    return {"missing": tmp_path / "nowhere", "empty": empty, "corrupt": corrupt, "foreign": foreign}


def test_recommend_cli_errors_are_one_line(trained, broken_dirs, capsys):
    out, _ = trained
    cases = [
        ((out, ","), (), "--history: expected comma-separated values"),
        ((out, "zz1,zz2"), (), "none of the 2 history item IDs"),
        ((out, "i1"), ("--top-k", 0), "top_k must be a positive integer"),
        ((out, "i1"), ("--top-k", 100000), "top_k=100000 is larger than the"),
        ((out, "i1,i2"), ("--event-types", "view"), "'event_types' must be a list of 2"),
        ((out, "i1"), ("--items-file", broken_dirs["missing"]), "items file not found"),
        ((broken_dirs["missing"], "i1"), (), "checkpoint directory not found"),
        ((broken_dirs["empty"], "i1"), (), "not a checkpoint (no config.json)"),
        ((broken_dirs["corrupt"], "i1"), (), "not valid JSON"),
        ((broken_dirs["foreign"], "i1"), (), "is not an hfseqrec model"),
    ]
    for (model, history), extra, message in cases:
        code, _, err = run_cli(capsys, "recommend", "--model", model, "--history", history, *extra)
        assert code == 2, (message, err)
        assert len(err) == 1 and err[0].startswith("hfseqrec recommend: error:"), err
        assert message in err[0], (message, err)


def test_push_cli_refuses_what_is_not_a_checkpoint(trained, broken_dirs, tmp_path, capsys):
    out, _ = trained
    no_card = tmp_path / "no_card"
    shutil.copytree(out, no_card, ignore=shutil.ignore_patterns("README.md", "checkpoints"))
    cases = [(broken_dirs["missing"], "checkpoint directory not found"),
             (broken_dirs["empty"], "missing config.json, model.safetensors, README.md"),
             (no_card, "missing README.md"),
             (broken_dirs["corrupt"], "not valid JSON"),
             (broken_dirs["foreign"], "is not an hfseqrec model")]
    with mock.patch.object(HfApi, "create_repo") as create:
        for model, message in cases:
            code, _, err = run_cli(capsys, "push", "--model", model, "--repo-id", "me/x")
            assert code == 2 and len(err) == 1 and err[0].startswith("hfseqrec push: error:"), err
            assert message in err[0], (message, err)
    create.assert_not_called()
