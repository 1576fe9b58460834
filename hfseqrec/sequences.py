"""Data stage 3: clean events -> per-user sequences, split leave-one-out (`hfseqrec prepare`).

In: behaviour-log files (see `events.py`). Out, in one directory:
  - a `datasets.DatasetDict` (`save_to_disk`), one row per user. For a user's time-ordered items
    s (len n >= 3): train input s[:-2]; validation input s[:-2] with label s[-2]; test input s[:-1]
    with label s[-1]. Columns: user_id, input_ids, event_type_ids, timestamps (+ label and
    label_event_type_id in validation/test);
  - `item_vocab/` (the item tokenizer) and `event_vocab.json` (behaviour types), see vocabulary.py;
  - `prepare_report.json`: what was read, dropped (per reason) and kept.
Sequences are built with Arrow (run-length offsets + `pa.ListArray.from_arrays`), not row by row.
"""

import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, List, Value, disable_progress_bars, load_from_disk

from .errors import HfSeqRecError
from .events import DROP_REASONS, FORMATS, Columns, clean, read_events
from .vocabulary import NUM_SPECIAL_TOKENS, EventVocabulary, ItemVocabulary

REPORT_FILE = "prepare_report.json"
INPUT_FEATURES = {"user_id": Value("string"), "input_ids": List(Value("int32")),
                  "event_type_ids": List(Value("int32")), "timestamps": List(Value("int64"))}
TRAIN_FEATURES = Features(INPUT_FEATURES)
EVAL_FEATURES = Features({**INPUT_FEATURES, "label": Value("int32"), "label_event_type_id": Value("int32")})


def prepare(inputs, output_dir, format=None, user_col="user_id", item_col="item_id", time_col=None,
            event_col=None, keep_events=None, min_user_interactions=5, min_item_interactions=5, max_len=200):
    """Read, clean, split and save; returns the report (also written to prepare_report.json)."""
    start = time.perf_counter()
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise HfSeqRecError(f"{output_dir}: exists and is not a directory")
    table, formats, warnings = read_events(inputs, format, Columns(user_col, item_col, time_col, event_col))
    events = clean(table, keep_events, min_user_interactions, min_item_interactions)
    del table

    item_vocab, item_tokens = _ranked_vocabulary(events.items, events.item_names)
    items = ItemVocabulary.from_items(item_vocab, max_len)
    event_names, event_tokens = _ranked_vocabulary(events.events, events.event_names)
    event_vocab = EventVocabulary.from_types(event_names)
    # codes -> token ids; items start after [PAD] [MASK] [UNK], behaviour types after [PAD] [UNK]
    input_ids = (item_tokens + NUM_SPECIAL_TOKENS)[events.items]
    event_ids = (event_tokens + len(EventVocabulary.SPECIALS))[events.events]
    splits, lengths = _leave_one_out(events, input_ids, event_ids)

    splits.save_to_disk(output_dir)
    items.save_pretrained(os.path.join(output_dir, "item_vocab"))
    event_vocab.save(os.path.join(output_dir, "event_vocab.json"))
    counts = np.bincount(event_ids, minlength=len(event_vocab))
    report = {
        "inputs": list(inputs),
        "format": formats[0] if len(set(formats)) == 1 else formats,
        "has_timestamps": events.has_time,
        "rows_read": events.rows_read,
        "users": len(lengths),
        "items": items.num_items,
        "interactions": int(lengths.sum()),
        "dropped": events.dropped,
        "event_types": {name: int(counts[i]) for i, name in enumerate(event_vocab.names[2:], start=2)},
        "sequence_length": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                            "max": int(lengths.max())},
        "split_sizes": {name: split.num_rows for name, split in splits.items()},
        "options": {"keep_events": keep_events, "min_user_interactions": min_user_interactions,
                    "min_item_interactions": min_item_interactions, "max_len": max_len},
        "warnings": warnings,
        "seconds": round(time.perf_counter() - start, 2),
    }
    with open(os.path.join(output_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=1)
    return report


def _ranked_vocabulary(codes, names):
    """Names present in `codes`, by descending frequency then name; and code -> rank (-1 if absent)."""
    counts = np.bincount(codes, minlength=len(names))
    present = np.flatnonzero(counts)
    name_rank = pc.rank(names, sort_keys="ascending", tiebreaker="first").to_numpy()
    ordered = present[np.lexsort((name_rank[present], -counts[present]))]
    rank = np.full(len(names), -1, np.int32)
    rank[ordered] = np.arange(len(ordered), dtype=np.int32)
    return names.take(pa.array(ordered)).to_pylist(), rank


def _leave_one_out(events, input_ids, event_ids):
    """Sorted events -> DatasetDict(train, validation, test) and the full sequence lengths."""
    users = events.users
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]).astype(np.int32)
    lengths = np.diff(np.r_[starts, len(users)]).astype(np.int32)
    # int32 throughout: these arrays have one entry per event (20M events -> 80 MB each)
    position = np.arange(len(users), dtype=np.int32) - np.repeat(starts, lengths)  # 0-based, per user
    to_end = np.repeat(lengths, lengths) - position  # 1 for a user's last event, 2 for the one before
    times = events.timestamps if events.has_time else position
    columns = {"input_ids": input_ids.astype(np.int32, copy=False),
               "event_type_ids": event_ids.astype(np.int32, copy=False),
               "timestamps": times.astype(np.int64, copy=False)}
    user_id = events.user_names.take(pa.array(users[starts])).cast(pa.string())

    def prefixes(cut):
        """Each user's sequence without its last `cut` events, as list columns."""
        keep = to_end > cut
        offsets = pa.array(np.r_[0, np.cumsum(lengths - cut)].astype(np.int32))
        return {name: pa.ListArray.from_arrays(offsets, values[keep]) for name, values in columns.items()}

    def labels(back):
        last = starts + lengths - back
        return {"label": pa.array(columns["input_ids"][last]),
                "label_event_type_id": pa.array(columns["event_type_ids"][last])}

    train_inputs = {"user_id": user_id, **prefixes(2)}  # validation shares the train inputs
    splits = DatasetDict({
        "train": _dataset(train_inputs, TRAIN_FEATURES),
        "validation": _dataset({**train_inputs, **labels(2)}, EVAL_FEATURES),
        "test": _dataset({"user_id": user_id, **prefixes(1), **labels(1)}, EVAL_FEATURES),
    })
    return splits, lengths


def _dataset(columns, features):
    return Dataset(pa.table(columns).cast(features.arrow_schema))


def load_prepared(path):
    """A `prepare` output directory -> (DatasetDict, ItemVocabulary, EventVocabulary)."""
    if not os.path.isdir(path):
        raise HfSeqRecError(f"{path}: no such directory; run `hfseqrec prepare INPUT --output {path}` first")
    needed = ("dataset_dict.json", "item_vocab", "event_vocab.json")
    missing = [name for name in needed if not os.path.exists(os.path.join(path, name))]
    if missing:
        raise HfSeqRecError(f"{path}: not a prepared directory ({missing[0]} not found); "
                            f"run `hfseqrec prepare INPUT --output {path}`")
    return load_from_disk(path), ItemVocabulary.from_pretrained(path), EventVocabulary.load(path)


def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="behaviour-log files, concatenated in order")
    parser.add_argument("--output", required=True, help="directory for the DatasetDict and vocabularies")
    parser.add_argument("--format", choices=FORMATS, help="input format; default: from the file suffix")
    parser.add_argument("--user-col", default="user_id", help="user column (default: user_id)")
    parser.add_argument("--item-col", default="item_id", help="item column (default: item_id)")
    parser.add_argument("--time-col", help="time column: epoch s/ms or ISO-8601 (default: timestamp, if any)")
    parser.add_argument("--event-col", help="behaviour-type column (default: event_type, if any)")
    parser.add_argument("--keep-events", help="comma-separated behaviour types to keep, e.g. view,purchase")
    parser.add_argument("--min-user-interactions", type=int, default=5, help="k-core: min events per user")
    parser.add_argument("--min-item-interactions", type=int, default=5, help="k-core: min events per item")
    parser.add_argument("--max-len", type=int, default=200, help="model_max_length of the item tokenizer")


def run(args):
    disable_progress_bars()  # the summary below is the output; save_to_disk's bars would bury it
    keep = [name.strip() for name in args.keep_events.split(",") if name.strip()] if args.keep_events else None
    report = prepare(args.inputs, args.output, args.format, args.user_col, args.item_col, args.time_col,
                     args.event_col, keep, args.min_user_interactions, args.min_item_interactions, args.max_len)
    for warning in report["warnings"]:
        print(f"hfseqrec prepare: warning: {warning}", file=sys.stderr)
    print(summary(report, args.output))


def summary(report, output_dir):
    length = report["sequence_length"]
    dropped = ", ".join(f"{reason} {report['dropped'][reason]:,}" for reason in DROP_REASONS)
    events = ", ".join(f"{name} {count:,}" for name, count in report["event_types"].items())
    sizes = " / ".join(f"{name} {rows:,}" for name, rows in report["split_sizes"].items())
    return "\n".join([
        f"prepared {report['users']:,} users, {report['items']:,} items, {report['interactions']:,} "
        f"interactions from {report['rows_read']:,} rows ({report['format']}) in {report['seconds']} s",
        f"  dropped rows: {dropped}",
        f"  behaviour types: {events}",
        f"  sequence length: min {length['min']:,}, median {length['median']:g}, max {length['max']:,}",
        f"  splits (rows = users): {sizes}",
        f"  written to {output_dir}: DatasetDict, item_vocab/, event_vocab.json, {REPORT_FILE}",
    ])
