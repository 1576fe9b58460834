"""Serving stage, command line: `hfseqrec recommend --model CKPT --history ID,ID,...` -> top-k as JSON.

Runs the checkpoint's `next-item-recommendation` pipeline (hfseqrec's own copy, no remote code) on
one history and prints `{"history": [...], "recommendations": [{"item_id", "score"[, "title"]}]}`.
`--items-file` adds titles: a CSV/TSV with a header (first column the item ID, a `title` column or
else the second column), or MovieLens `movies.dat` (`id::title::genres`, latin-1), optionally .gz.
"""

import csv
import gzip
import io
import json
import os

from .errors import HfSeqRecError


def parse_list(text, flag):
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise HfSeqRecError(f"{flag}: expected comma-separated values, got {text!r}")
    return values


def read_titles(path):
    """Item metadata file -> {raw item ID as str: title}."""
    if not os.path.isfile(path):
        raise HfSeqRecError(f"{path}: items file not found")
    name = path[:-3] if path.endswith(".gz") else path
    movielens = name.endswith(".dat")
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            raw = f.read()
        text = raw.decode("latin-1") if movielens else raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise HfSeqRecError(f"{path}: cannot read the items file ({err})") from None
    if movielens:
        rows = [line.split("::") for line in text.splitlines() if line.strip()]
        if any(len(row) < 2 for row in rows):
            raise HfSeqRecError(f"{path}: expected MovieLens lines id::title::genres")
        return {row[0].strip(): row[1] for row in rows}
    rows = list(csv.reader(io.StringIO(text), delimiter="\t" if name.endswith(".tsv") else ","))
    if not rows or len(rows[0]) < 2:
        raise HfSeqRecError(f"{path}: expected a header with an item ID column and a title column")
    header = [h.strip().lower() for h in rows[0]]
    column = header.index("title") if "title" in header else 1
    return {row[0].strip(): row[column] for row in rows[1:] if len(row) > column}


def build_pipeline(path):
    """A checkpoint directory -> hfseqrec's NextItemRecommendationPipeline on CPU, or one clear error."""
    from transformers.utils import logging

    from . import PIPELINE_TASK, NextItemRecommendationPipeline
    from .checkpoint import load_checkpoint
    from .vocabulary import ItemVocabulary

    logging.disable_progress_bar()
    model = load_checkpoint(path)
    tokenizer = ItemVocabulary.from_pretrained(path).tokenizer
    if len(tokenizer) != model.config.vocab_size:
        raise HfSeqRecError(f"{path}: the item vocabulary has {len(tokenizer)} tokens but the model has "
                            f"vocab_size {model.config.vocab_size}")
    return NextItemRecommendationPipeline(model=model, tokenizer=tokenizer, task=PIPELINE_TASK, device="cpu")


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--history", required=True, help="the user's item IDs, oldest first, comma-separated")
    parser.add_argument("--top-k", type=int, default=10, help="number of recommendations (default 10)")
    parser.add_argument("--event-types", help="behaviour type of each history item, comma-separated")
    parser.add_argument("--keep-seen", action="store_true", help="allow items already in the history")
    parser.add_argument("--exclude", help="item IDs never to recommend, comma-separated")
    parser.add_argument("--allow", help="recommend only among these item IDs, comma-separated")
    parser.add_argument("--items-file", help="item metadata (CSV with a title column, or movies.dat) for titles")


def run(args):
    history = parse_list(args.history, "--history")
    request = {"history": history}
    if args.event_types:
        request["event_types"] = parse_list(args.event_types, "--event-types")
    options = {"top_k": args.top_k, "exclude_seen": not args.keep_seen}
    for name in ("exclude", "allow"):
        if getattr(args, name):
            options[name] = parse_list(getattr(args, name), f"--{name}")
    titles = read_titles(args.items_file) if args.items_file else None
    pipe = build_pipeline(args.model)
    try:
        recommendations = pipe(request, **options)
    except ValueError as err:
        raise HfSeqRecError(str(err).splitlines()[0]) from None
    if titles is not None:
        for item in recommendations:
            item["title"] = titles.get(str(item["item_id"]))
    if pipe.item_id_type == "int":  # echo the history in the catalog's own ID type, like the results
        history = [int(h) if h.lstrip("-").isdigit() else h for h in history]
    print(json.dumps({"history": history, "recommendations": recommendations}, indent=2, ensure_ascii=False))
