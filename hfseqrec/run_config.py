"""Run configuration: one dataclass, read from YAML and overridden by flags, checked strictly.

`hfseqrec train --config FILE.yaml --num_epochs 3 --model.hidden_size 128`: YAML keys and flags map
1:1 onto `RunConfig` fields; `model:` holds the model config (fields of SASRecConfig etc.). Unknown
keys and wrong types fail with the field's name. The effective configuration is printed at start
and saved beside the checkpoint.
"""

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field

import yaml

from . import MODEL_FAMILIES
from .errors import HfSeqRecError
from .metrics import DEFAULT_KS

# Model config fields that come from the data or the run, never from the user's `model:` mapping.
DERIVED_MODEL_FIELDS = ("vocab_size", "num_event_types", "max_position_embeddings", "pad_token_id",
                        "mask_token_id", "num_special_tokens", "is_causal")


@dataclass
class RunConfig:
    model_type: str = field(default="sasrec", metadata={"help": "sasrec | bert4rec | gru4rec"})
    data: str = field(default="", metadata={"help": "directory written by `hfseqrec prepare`"})
    output_dir: str = field(default="runs/model", metadata={"help": "where the best checkpoint is saved"})
    num_epochs: int = field(default=200, metadata={"help": "upper bound; early stopping usually ends sooner"})
    batch_size: int = field(default=128, metadata={"help": "users per batch on each process"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay"})
    lr_scheduler_type: str = field(default="constant_with_warmup", metadata={
        "help": "transformers scheduler: constant_with_warmup, linear, cosine, warmup_stable_decay"})
    decay_epochs: int = field(default=0, metadata={
        "help": "warmup_stable_decay: the last N of num_epochs decay the LR linearly to 0"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up in optimizer steps"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping; 0 turns it off"})
    max_seq_len: int = field(default=200, metadata={"help": "most recent items the model reads"})
    full_history: bool = field(default=False, metadata={
        "help": "also train on the older windows of histories longer than max_seq_len"})
    group_by_length: bool = field(default=False, metadata={
        "help": "batch users of similar history length together: less padding, but worse per epoch on ML-1M"})
    use_event_types: bool = field(default=True, metadata={"help": "add behaviour-type embeddings"})
    seed: int = field(default=42, metadata={"help": "seeds init, shuffling, masking and negatives"})
    eval_every: int = field(default=1, metadata={"help": "validate every N epochs"})
    patience: int = field(default=10, metadata={"help": "stop after N validations without a better NDCG@10"})
    eval_batch_size: int = field(default=256, metadata={"help": "users per evaluation batch"})
    ks: list = field(default_factory=lambda: list(DEFAULT_KS), metadata={"help": "metric cut-offs"})
    exclude_seen: bool = field(default=True, metadata={"help": "exclude the user's seen items at ranking"})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (accelerate)"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_minutes: float = field(default=0.0, metadata={"help": "stop training after this wall time (0 = off)"})
    stop_after_epochs: int = field(default=0, metadata={"help": "leave after N epochs this run (resume later)"})
    resume: bool = field(default=False, metadata={"help": "continue from the last state in output_dir"})
    report_to: str = field(default="", metadata={"help": "accelerate trackers, e.g. tensorboard (besides JSONL)"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads per process (0 = torch default)"})
    model: dict = field(default_factory=dict, metadata={"help": "model config fields (see the model's Config)"})

    def to_dict(self):
        return dataclasses.asdict(self)


def _check_type(name, value, annotation):
    """Return value converted to the field's type, or raise naming the field."""
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    base = typing.get_origin(annotation) or annotation
    if isinstance(annotation, types.UnionType):
        base = tuple(typing.get_origin(a) or a for a in typing.get_args(annotation))
    if isinstance(value, bool) and base in (int, float):
        raise HfSeqRecError(f"{name}: expected {annotation.__name__}, got {value!r}")
    if not isinstance(value, base):
        raise HfSeqRecError(f"{name}: expected {getattr(annotation, '__name__', annotation)}, "
                            f"got {type(value).__name__} {value!r}")
    return value


def _parse_value(text):
    """A flag's text as YAML, so `3` is an int, `1e-3` a float, `[1, 10]` a list, `true` a bool."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and value.replace(".", "", 1).replace("e-", "", 1).isdigit():
        return float(value)  # PyYAML reads 1e-3 as a string
    return value


def _flag_pairs(tokens):
    """["--a", "1", "--resume", "--b", "x"] -> (flag, text) pairs; a flag without a value means true."""
    pairs = []
    while tokens:
        flag = tokens.pop(0)
        if not flag.startswith("--") or len(flag) < 3:
            raise HfSeqRecError(f"expected a --field flag, got {flag!r}")
        if "=" in flag:
            flag, text = flag.split("=", 1)
        else:
            text = tokens.pop(0) if tokens and not tokens[0].startswith("--") else "true"
        pairs.append((flag, text))
    return pairs


def load_run_config(path=None, overrides=()):
    """YAML file + `--field value` / `--model.field value` pairs -> a checked RunConfig."""
    values = {}
    if path:
        if not os.path.isfile(path):
            raise HfSeqRecError(f"{path}: config file not found")
        with open(path) as f:
            try:
                values = yaml.safe_load(f) or {}
            except yaml.YAMLError as err:
                raise HfSeqRecError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise HfSeqRecError(f"{path}: expected a mapping of run fields, got {type(values).__name__}")
        values["model"] = dict(values.get("model") or {})
    for flag, text in _flag_pairs(list(overrides)):
        key = flag[2:].replace("-", "_")
        if key.startswith("model."):
            values.setdefault("model", {})[key[len("model."):]] = _parse_value(text)
        else:
            values[key] = _parse_value(text)
    hints = typing.get_type_hints(RunConfig)
    for key in values:
        if key not in hints:
            raise HfSeqRecError(f"unknown run config field {key!r} (known: {', '.join(hints)})")
    run = RunConfig(**{k: _check_type(k, v, hints[k]) for k, v in values.items()})
    if run.model_type not in MODEL_FAMILIES:
        raise HfSeqRecError(f"model_type: expected one of {sorted(MODEL_FAMILIES)}, got {run.model_type!r}")
    if run.mixed_precision not in ("no", "bf16", "fp16"):
        raise HfSeqRecError(f"mixed_precision: expected no, bf16 or fp16, got {run.mixed_precision!r}")
    for name in ("num_epochs", "batch_size", "max_seq_len", "eval_every", "patience", "eval_batch_size",
                 "gradient_accumulation_steps"):
        if getattr(run, name) < 1:
            raise HfSeqRecError(f"{name}: must be >= 1, got {getattr(run, name)}")
    if not run.ks or not all(isinstance(k, int) and k >= 1 for k in run.ks):
        raise HfSeqRecError(f"ks: expected a list of integers >= 1, got {run.ks!r}")
    if 10 not in run.ks:
        raise HfSeqRecError(f"ks: must include 10 (early stopping watches NDCG@10), got {run.ks!r}")
    if (run.lr_scheduler_type == "warmup_stable_decay") != (0 < run.decay_epochs <= run.num_epochs):
        raise HfSeqRecError(f"decay_epochs: give 1..num_epochs with lr_scheduler_type warmup_stable_decay "
                            f"(and only then), got {run.decay_epochs} with {run.lr_scheduler_type}")
    if not run.data:
        raise HfSeqRecError("data: no prepared data directory given (YAML `data:` or --data)")
    build_model_config(run, vocab_size=1000, num_event_types=0)  # fail early on bad model fields
    return run


def build_model_config(run, vocab_size, num_event_types):
    """The model config for this run: the user's `model:` fields + what the data decides."""
    config_class = MODEL_FAMILIES[run.model_type][0]
    known = {f.name for f in dataclasses.fields(config_class)}
    for key in run.model:
        if key in DERIVED_MODEL_FIELDS:
            raise HfSeqRecError(f"model.{key}: set from the data and the run config, not by hand")
        if key not in known:
            raise HfSeqRecError(f"model.{key}: unknown field of {config_class.__name__}")
    try:
        return config_class(**run.model, vocab_size=vocab_size, num_event_types=num_event_types,
                            max_position_embeddings=run.max_seq_len)
    except Exception as err:  # strict dataclass errors span lines; keep the one that names the field
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise HfSeqRecError(f"model config: {lines[-1] if lines else err}") from None
