"""Remote-code test: a saved checkpoint loads where hfseqrec is not installed.

Each family is saved to a temporary folder; a fresh interpreter that cannot import hfseqrec
(`-I -S`: no user site, no .pth files, so no editable-install finder, and only the site-packages
folder of torch/transformers on sys.path) loads it with `AutoModel.from_pretrained(...,
trust_remote_code=True)` from the copied .py files and prints its scores as JSON. One child
process serves all three families, because importing torch dominates the run time.
"""

import json
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import safetensors
import torch
import transformers

import hfseqrec

FAMILIES = list(hfseqrec.MODEL_FAMILIES)
PAD, MASK = 0, 1

CHILD = r"""
import json, sys
args = json.loads(sys.argv[1])
sys.path.extend(args["site_packages"])
try:
    import hfseqrec
except ModuleNotFoundError:
    pass
else:
    raise SystemExit(f"hfseqrec is importable in the child: {hfseqrec.__path__}")

import torch
from transformers import AutoModel

report = {}
for family, checkpoint in args["checkpoints"].items():
    try:
        AutoModel.from_pretrained(checkpoint)
        refusal = None
    except Exception as error:
        refusal = f"{type(error).__name__}: {error}"
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    ids, mask = (torch.tensor(x) for x in args["inputs"][family])
    with torch.no_grad():
        scores = model(ids, attention_mask=mask).logits
    report[family] = {
        "refusal": refusal,
        "module": type(model).__module__,
        "tied": model.get_output_embeddings().weight is model.get_input_embeddings().weight,
        "scores": scores.tolist(),
    }
report["hfseqrec_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "hfseqrec")
with open(args["report"], "w") as file:  # not stdout: transformers prints its trust prompt there
    json.dump(report, file)
"""


def tiny_model(model_type):
    kwargs = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, max_position_embeddings=12)
    if model_type != "gru4rec":
        kwargs.update(num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **kwargs)
    return hfseqrec.MODEL_FAMILIES[model_type][1](config).eval()


def left_padded(model_type):
    """Two histories, one left-padded; BERT4Rec reads an appended [MASK]."""
    rows = [[5, 6, 7, 8, 9], [10, 11]]
    if model_type == "bert4rec":
        rows = [row + [MASK] for row in rows]
    length = max(len(row) for row in rows)
    ids = [[PAD] * (length - len(row)) + row for row in rows]
    mask = [[0] * (length - len(row)) + [1] * len(row) for row in rows]
    return ids, mask


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """Save every family, load them all in one clean child; returns (in-process scores, child report)."""
    root = tmp_path_factory.mktemp("remote")
    checkpoints, inputs, expected = {}, {}, {}
    for family in FAMILIES:
        model = tiny_model(family)
        checkpoints[family] = str(root / f"checkpoint_{family}")
        model.save_pretrained(checkpoints[family])
        inputs[family] = left_padded(family)
        with torch.no_grad():
            expected[family] = model(*(torch.tensor(x) for x in inputs[family])).logits
    # torch, transformers and their dependencies live in one site-packages folder; the package under
    # test is reachable only through its editable-install .pth finder, which -S leaves unprocessed.
    site_packages = sorted({str(Path(module.__file__).parents[1])
                            for module in (torch, transformers, huggingface_hub, safetensors)})
    assert not any((Path(folder) / "hfseqrec").exists() for folder in site_packages), site_packages
    report = root / "report.json"
    args = {"site_packages": site_packages, "checkpoints": checkpoints, "inputs": inputs, "report": str(report)}
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf_home"), "HOME": str(root),
           "TRANSFORMERS_VERBOSITY": "error"}
    child = subprocess.run([sys.executable, "-I", "-S", "-c", CHILD, json.dumps(args)], cwd=root, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    return expected, json.loads(report.read_text()), checkpoints


def test_checkpoint_config_names_the_remote_classes(remote):
    _, _, checkpoints = remote
    for family, checkpoint in checkpoints.items():
        auto_map = json.loads((Path(checkpoint) / "config.json").read_text())["auto_map"]
        assert set(auto_map) == {"AutoConfig", "AutoModel"}, family
        for reference in auto_map.values():
            assert (Path(checkpoint) / f"{reference.split('.')[0]}.py").is_file(), reference


def test_child_never_imported_hfseqrec(remote):
    _, report, _ = remote
    assert report["hfseqrec_modules"] == []


@pytest.mark.parametrize("family", FAMILIES)
def test_loading_without_trust_remote_code_fails(remote, family):
    _, report, _ = remote
    assert report[family]["refusal"] is not None, "loaded custom code without trust_remote_code=True"
    assert "trust_remote_code" in report[family]["refusal"]


@pytest.mark.parametrize("family", FAMILIES)
def test_remote_code_gives_the_same_scores(remote, family):
    expected, report, _ = remote
    result = report[family]
    assert result["module"].startswith("transformers_modules."), result["module"]
    assert result["tied"]
    scores = torch.tensor(result["scores"], dtype=expected[family].dtype)
    torch.testing.assert_close(scores, expected[family], atol=1e-6, rtol=0)
