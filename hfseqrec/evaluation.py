"""Evaluation stage: full-ranking metrics of a model (and of popularity) on a prepared split.

checkpoint + prepared split -> {"ndcg@10": ..., "hr@10": ..., "mrr@10": ..., "coverage@10": ...,
"popularity": {...}, "protocol": "..."}. Every user of the split is ranked against the whole
catalog; seen items are excluded unless asked otherwise; ties are broken pessimistically. Users
are sharded over processes and gathered back, so the figures do not depend on batch size or
process count. Scoring is batched by users, and the batch shrinks for large catalogs so that a
(batch x catalog) score matrix stays within ~256 MB.
"""

import json

import numpy as np
import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader

from .collators import EvalCollator
from .metrics import DEFAULT_KS, coverage, metrics_from_ranks, target_ranks, top_k_items

SCORE_BUDGET = 2**26  # floats in one (batch x catalog) score matrix


def protocol(exclude_seen=True):
    seen = "seen items excluded (the target never)" if exclude_seen else "seen items kept"
    return (f"leave-one-out, full ranking over the whole catalog, {seen}, every user evaluated, "
            "ties broken pessimistically")


def eval_loader(split, config, batch_size=256, accelerator=None):
    """A DataLoader of EvalCollator batches over this process's contiguous share of a split."""
    batch_size = max(1, min(batch_size, SCORE_BUDGET // config.vocab_size))
    if accelerator is not None and accelerator.num_processes > 1:
        split = split.shard(accelerator.num_processes, accelerator.process_index, contiguous=True)
    rows = split.with_format("numpy", columns=["input_ids", "event_type_ids", "label"])
    # Users in order of history length: a batch then holds similar lengths and little padding.
    # Metrics are means over users, so the order does not change them.
    longest_first = np.argsort([-len(x) for x in split["input_ids"]], kind="stable").tolist()
    return DataLoader(rows, batch_size=batch_size, sampler=longest_first, collate_fn=EvalCollator(config))


@torch.inference_mode()
def evaluate_scores(score_fn, loader, accelerator=None, ks=DEFAULT_KS, exclude_seen=True, num_items=None,
                    num_special_tokens=3, device="cpu"):
    """score_fn(batch) -> (B, V) scores. Returns the metrics dict over every user in `loader`."""
    ranks, tops = [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        scores = score_fn(batch)
        exclude = batch["seen"] if exclude_seen else None
        ranks.append(target_ranks(scores, batch["labels"], exclude).cpu())
        tops.append(top_k_items(scores, max(ks), exclude).cpu())
    ranks, tops = torch.cat(ranks), torch.cat(tops)
    if accelerator is not None and accelerator.num_processes > 1:  # every process gets all users, in order
        ranks, tops = (torch.cat(gather_object([t])) for t in (ranks, tops))
    metrics = metrics_from_ranks(ranks, ks)
    for k in ks:
        metrics[f"coverage@{k}"] = coverage(tops[:, :k], num_items, num_special_tokens)
    metrics["users"] = len(ranks)
    return metrics


def model_score_fn(model):
    def score(batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     event_type_ids=batch["event_type_ids"]).logits
    return score


def popularity_scores(train_split, vocab_size, num_special_tokens):
    """(V,) item counts over the training inputs; specials get -inf."""
    flat = np.concatenate([np.asarray(x) for x in train_split.with_format("numpy")["input_ids"]])
    counts = torch.from_numpy(np.bincount(flat, minlength=vocab_size).astype(np.float32))
    counts[:num_special_tokens] = float("-inf")
    return counts


def evaluate_model(model, data, split, accelerator=None, ks=DEFAULT_KS, exclude_seen=True, batch_size=256,
                   with_popularity=True):
    """Metrics of `model` on `data[split]` (a prepared DatasetDict), popularity beside them."""
    config = model.config
    model.eval()
    num_items = config.vocab_size - config.num_special_tokens
    loader = eval_loader(data[split], config, batch_size, accelerator)
    metrics = evaluate_scores(model_score_fn(model), loader, accelerator, ks, exclude_seen, num_items,
                              config.num_special_tokens, model.device)
    if with_popularity:
        popular = popularity_scores(data["train"], config.vocab_size, config.num_special_tokens)
        metrics["popularity"] = evaluate_scores(lambda batch: popular.expand(len(batch["labels"]), -1),
                                                loader, accelerator, ks, exclude_seen, num_items,
                                                config.num_special_tokens)
    metrics["protocol"] = protocol(exclude_seen)
    return metrics


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="checkpoint directory (or hub id in the cache)")
    parser.add_argument("--data", required=True, help="directory written by `hfseqrec prepare`")
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)), help="cut-offs, comma-separated")
    parser.add_argument("--keep-seen", action="store_true", help="rank items the user has already seen too")
    parser.add_argument("--batch-size", type=int, default=256)


def run(args):
    from .checkpoint import load_checkpoint
    from .errors import HfSeqRecError
    from .sequences import load_prepared
    from .vocabulary import ItemVocabulary

    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise HfSeqRecError(f"--ks: expected comma-separated integers, got {args.ks!r}") from None
    if not ks or min(ks) < 1:
        raise HfSeqRecError(f"--ks: cut-offs must be >= 1, got {args.ks!r}")
    data, items, _ = load_prepared(args.data)
    model = load_checkpoint(args.model)
    # Token ids only mean the same items when both sides use one vocabulary.
    if items.tokenizer.get_vocab() != ItemVocabulary.from_pretrained(args.model).tokenizer.get_vocab():
        raise HfSeqRecError(f"{args.data}: its item vocabulary differs from the one in {args.model}; "
                            "evaluate on the data the model was trained with")
    metrics = evaluate_model(model, data, args.split, ks=ks, exclude_seen=not args.keep_seen,
                             batch_size=args.batch_size)
    print(json.dumps({"split": args.split, **metrics}, indent=2))
