"""Hub stage: `hfseqrec push --model CKPT --repo-id NAME` uploads a checkpoint directory as a model repo.

Everything that `save_checkpoint` wrote goes up in one commit (weights, model and pipeline code,
item and event vocabularies, run config, metrics and the model card), never the training state
that `train` keeps beside it (`checkpoints/`, `log.jsonl`). The token comes from the usual
huggingface_hub places (`HF_TOKEN`, `hf auth login`).
"""

import json
import os

from .errors import HfSeqRecError

REQUIRED_FILES = ("config.json", "model.safetensors", "README.md")
# Training state and logs that `train` keeps in the output directory but that are not the model:
# accelerate's save_state folders, the JSONL log, and any tracker folder (a checkpoint is flat).
IGNORE_PATTERNS = ["checkpoints/*", "log.jsonl", "*/*"]


def check_checkpoint(path):
    """Refuse anything that is not a complete hfseqrec checkpoint, in one line."""
    from . import MODEL_FAMILIES

    if not os.path.isdir(path):
        raise HfSeqRecError(f"{path}: checkpoint directory not found")
    missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(path, name))]
    if missing:
        hint = " (the card is written when training finishes with metrics)" if missing == ["README.md"] else ""
        raise HfSeqRecError(f"{path}: not a complete hfseqrec checkpoint, missing {', '.join(missing)}{hint}")
    try:
        with open(os.path.join(path, "config.json")) as f:
            model_type = json.load(f).get("model_type")
    except (ValueError, AttributeError) as err:
        raise HfSeqRecError(f"{path}/config.json: not valid JSON ({err})") from None
    if model_type not in MODEL_FAMILIES:
        raise HfSeqRecError(f"{path}: model_type {model_type!r} is not an hfseqrec model")


def push(path, repo_id, private=False, commit_message=None, token=None):
    """Create the repo if needed and upload the checkpoint folder; returns the commit info."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    check_checkpoint(path)
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=getattr(repo, "repo_id", repo_id), folder_path=path,
                                 repo_type="model", ignore_patterns=list(IGNORE_PATTERNS),  # it appends to the list
                                 commit_message=commit_message or "Upload hfseqrec model")
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError) as err:
        raise HfSeqRecError(f"push to {repo_id} failed: {str(err).splitlines()[0]}") from None


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="checkpoint directory written by `hfseqrec train`")
    parser.add_argument("--repo-id", required=True, help="hub repository, e.g. your-name/sasrec-ml1m")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--commit-message", help="commit message (default: Upload hfseqrec model)")


def run(args):
    commit = push(args.model, args.repo_id, args.private, args.commit_message)
    print(json.dumps({"repo_id": args.repo_id, "commit_url": str(getattr(commit, "commit_url", commit))}))
