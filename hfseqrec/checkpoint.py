"""Checkpoint stage: a trained model as a complete, self-describing Hugging Face folder.

model + vocabularies + run configuration + metrics -> DIR with config.json, model.safetensors,
the model's code files (for `trust_remote_code`), the pipeline's code file and its entry in
config.json's `custom_pipelines` (so `pipeline(model=DIR, trust_remote_code=True)` works without
hfseqrec), the item vocabulary (tokenizer files), event_vocab.json, training_config.json,
metrics.json and, when metrics are given, the model card README.md. Nothing is pickled.
"""

import json
import os

from transformers import AutoModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY

from . import MODEL_FAMILIES, PIPELINE_TASK
from .errors import HfSeqRecError

TRAINING_CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"


def save_checkpoint(model, out_dir, items, events, training_config=None, metrics=None):
    """Write the model with everything needed to use it without the training data."""
    os.makedirs(out_dir, exist_ok=True)
    # What Pipeline.save_pretrained does, without building a pipeline (which would move the model).
    task = PIPELINE_REGISTRY.supported_tasks[PIPELINE_TASK]
    pipeline_class = task["impl"]
    model.config.custom_pipelines = {PIPELINE_TASK: {
        "impl": f"{pipeline_class.__module__.rsplit('.', 1)[-1]}.{pipeline_class.__name__}",
        "pt": [auto_class.__name__ for auto_class in task["pt"]]}}
    model.save_pretrained(out_dir)
    custom_object_save(pipeline_class, out_dir)  # copies pipeline_hfseqrec.py flat into out_dir
    items.save_pretrained(out_dir)
    events.save(out_dir)
    for name, content in ((TRAINING_CONFIG_FILE, training_config), (METRICS_FILE, metrics)):
        if content is not None:
            with open(os.path.join(out_dir, name), "w") as f:
                json.dump(content, f, indent=2)
    if metrics is not None:
        from .model_card import write_model_card

        write_model_card(out_dir, model.config, metrics, training_config, model.num_parameters())


def load_checkpoint(path, **kwargs):
    """A saved hfseqrec checkpoint -> its model in eval mode, or one clear error."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise HfSeqRecError(f"{path}: checkpoint directory not found")
    if not os.path.isfile(config_file):
        raise HfSeqRecError(f"{path}: not a checkpoint (no config.json)")
    try:
        with open(config_file) as f:
            model_type = json.load(f).get("model_type")
    except (json.JSONDecodeError, AttributeError) as err:
        raise HfSeqRecError(f"{config_file}: not valid JSON ({err})") from None
    if model_type not in MODEL_FAMILIES:
        raise HfSeqRecError(f"{config_file}: model_type {model_type!r} is not an hfseqrec model "
                            f"(expected one of {sorted(MODEL_FAMILIES)})")
    try:
        return AutoModel.from_pretrained(path, **kwargs).eval()
    except (OSError, ValueError, RuntimeError) as err:
        raise HfSeqRecError(f"{path}: cannot load the checkpoint: {str(err).splitlines()[0]}") from None


def read_json(path, name):
    """A JSON file saved beside the model, or None when absent."""
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        return None
    with open(file) as f:
        return json.load(f)
