"""Data stage 1: behaviour-log files -> one clean event table, sorted by (user, time).

In: CSV / TSV / Parquet / JSON Lines files (optionally .gz), MovieLens `::` .dat files, or the
SASRec/BERT4Rec text format (`user item` per line, in time order). Out: `Events`, numpy arrays of
user / item / behaviour-type codes and epoch-second timestamps, sorted stably by (user, time), the
dictionaries that turn codes back into raw IDs, and a count of every dropped row per reason.
`sequences.py` turns this into per-user sequences.

Everything works a column at a time (pyarrow reads and parses, numpy cleans); no Python loop runs
over rows, except to find the line number of a malformed row after pyarrow has rejected the file.
"""

import csv
import gzip
import json
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from .errors import HfSeqRecError

FORMATS = ("csv", "tsv", "parquet", "jsonl", "movielens", "sasrec")
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl", ".dat": "movielens"}
# Every reason is always reported, in the order the steps run; counts are rows (events).
DROP_REASONS = ("missing_user", "missing_item", "bad_timestamp", "missing_event_type", "event_type_filtered",
                "duplicate", "min_user_interactions", "min_item_interactions", "too_short_for_split")
MIN_SEQUENCE_LENGTH = 3  # leave-one-out needs one training item, a validation and a test target
MS_THRESHOLD = 1e11  # 1e11 s is the year 5138, 1e11 ms is 1973: larger values must be milliseconds
DICT = pa.dictionary(pa.int32(), pa.string())


@dataclass
class Columns:
    """Names of the input columns. `time` and `event` of None mean "use the default if present"."""

    user: str = "user_id"
    item: str = "item_id"
    time: str | None = None
    event: str | None = None


@dataclass
class Events:
    """The cleaned log: row k is `user_names[users[k]]` doing `event_names[events[k]]` on an item."""

    users: np.ndarray  # int32 codes, sorted; equal times keep file order
    items: np.ndarray  # int32 codes into item_names
    events: np.ndarray  # int32 codes into event_names
    timestamps: np.ndarray  # int64 epoch seconds; without a time column, the row's position in the input
    user_names: pa.Array
    item_names: pa.Array
    event_names: pa.Array
    has_time: bool
    rows_read: int
    dropped: dict = field(default_factory=dict)


def detect_format(path):
    name = path.lower().removesuffix(".gz")
    suffix = os.path.splitext(name)[1]
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    raise HfSeqRecError(f"{path}: cannot tell the format from the suffix '{suffix}'; "
                        f"pass --format ({', '.join(FORMATS)})")


def read_events(inputs, fmt=None, columns=None):
    """Read and concatenate the files, in the order given. Returns (table, formats, warnings).

    The table has `user`, `item`, optionally `event` (dictionary-encoded strings) and `time` (int64
    epoch seconds, null where missing or unparseable; absent for formats without time).
    """
    columns = columns or Columns()
    tables, formats, warnings = [], [], []
    for path in inputs:
        if not os.path.isfile(path):
            raise HfSeqRecError(f"{path}: no such file")
        file_fmt = fmt or detect_format(path)
        if file_fmt not in FORMATS:
            raise HfSeqRecError(f"{path}: unknown format '{file_fmt}' (known: {', '.join(FORMATS)})")
        table = _read_file(path, file_fmt, columns, warnings)
        if table.num_rows == 0:
            raise HfSeqRecError(f"{path}: no rows (empty file)")
        if tables and table.column_names != tables[0].column_names:
            raise HfSeqRecError(f"{path}: has columns {table.column_names} but {inputs[0]} has "
                                f"{tables[0].column_names}; all inputs need the same optional columns")
        tables.append(table)
        formats.append(file_fmt)
    table = pa.concat_tables(tables).unify_dictionaries().combine_chunks()
    del tables
    pa.default_memory_pool().release_unused()  # the CSV reader's scratch memory, before numpy takes over
    return table, formats, warnings


def _read_file(path, fmt, columns, warnings):
    if fmt == "parquet":
        data = gzip.open(path).read() if path.endswith(".gz") else None

        def source():
            return pa.BufferReader(data) if data is not None else path

        names = _arrow_call(path, lambda: pq.read_schema(source()).names, "")
        wanted = _wanted_columns(path, names, columns)
        table = _arrow_call(path, lambda: pq.read_table(source(), columns=list(wanted.values())), "")
        return _standardise(table, wanted, path, warnings, line_offset=0, unit="row")
    if fmt == "jsonl":
        table = _arrow_call(path, lambda: pa_json.read_json(path), "")
        wanted = _wanted_columns(path, table.column_names, columns)
        return _standardise(table, wanted, path, warnings, line_offset=0, unit="line")
    if fmt == "movielens":  # user::item::rating::timestamp -> split on ':' and keep every other field
        names = ["user_id", "_", "item_id", "__", "rating", "___", "timestamp"]
        wanted = {"user": "user_id", "item": "item_id", "time": "timestamp"}
        return _read_delimited(path, ":", names, wanted, warnings, "::")
    if fmt == "sasrec":  # `user item` in time order; the position in the file is the only clock
        wanted = {"user": "user_id", "item": "item_id"}
        return _read_delimited(path, " ", ["user_id", "item_id"], wanted, warnings, " ")
    delimiter = "\t" if fmt == "tsv" else ","
    wanted = _wanted_columns(path, _read_header(path, delimiter), columns)
    return _read_delimited(path, delimiter, None, wanted, warnings, delimiter)


def _wanted_columns(path, names, columns):
    """Map our roles (user, item, time, event) onto the file's column names; explicit ones must exist."""
    wanted = {"user": columns.user, "item": columns.item}
    for role, explicit, default in (("time", columns.time, "timestamp"), ("event", columns.event, "event_type")):
        if explicit is not None:
            wanted[role] = explicit
        elif default in names:
            wanted[role] = default
    for role, name in wanted.items():
        if name not in names:
            raise HfSeqRecError(f"{path}: missing {role} column '{name}' (columns: {', '.join(map(str, names))})")
    return wanted


def _read_header(path, delimiter):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f, delimiter=delimiter), None)
    if not header:
        raise HfSeqRecError(f"{path}: empty file")
    return header


def _read_delimited(path, delimiter, names, wanted, warnings, shown_delimiter):
    read_options = pa_csv.ReadOptions(column_names=names, block_size=1 << 22)
    parse = pa_csv.ParseOptions(delimiter=delimiter, quote_char='"' if delimiter in ",\t" else False)

    def read(time_type):
        # IDs as dictionary strings: a 20M-row log holds one int32 code per row, not 20M strings.
        types = {name: (time_type if role == "time" else DICT) for role, name in wanted.items()}
        convert = pa_csv.ConvertOptions(column_types=types, include_columns=list(wanted.values()),
                                        strings_can_be_null=True, null_values=[""])
        return pa_csv.read_csv(path, read_options, parse, convert)

    def read_any_time():
        try:
            return read(pa.int64())  # the usual case: integer epoch times, no text copy of the column
        except pa.ArrowInvalid as err:
            if "time" not in wanted or "conversion error" not in str(err):
                raise
            return read(pa.string())  # ISO-8601 strings or bad values: parsed in _parse_time

    table = _arrow_call(path, read_any_time, shown_delimiter, header=names is None)
    return _standardise(table, wanted, path, warnings, line_offset=0 if names else 1, unit="line")


def _arrow_call(path, read, delimiter, header=False):
    """Run a pyarrow reader; turn its error into one line naming the file and the bad line."""
    try:
        return read()
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Empty CSV file" in message:
            raise HfSeqRecError(f"{path}: empty file") from None
        if "Expected" in message and "columns" in message and delimiter:
            raise HfSeqRecError(_find_bad_row(path, delimiter, header)) from None
        if "JSON parse error" in message:
            message = _find_bad_json_line(path) or message
        raise HfSeqRecError(f"{path}: {message}") from None


def _find_bad_row(path, delimiter, header):
    """Error path only: find the first line whose field count differs from the first line's."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8", errors="replace") as f:
        rows = csv.reader(f, delimiter=delimiter) if len(delimiter) == 1 and delimiter != " " else (
            line.rstrip("\r\n").split(delimiter) for line in f)
        expected = None
        for number, fields in enumerate(rows, start=1):
            if expected is None:
                expected = len(fields)
            elif fields and len(fields) != expected:
                shown = delimiter.join(fields)
                return (f"{path}: line {number}: expected {expected} fields separated by {delimiter!r}, "
                        f"got {len(fields)}: {shown[:80]!r}")
    return f"{path}: rows with different numbers of fields"


def _find_bad_json_line(path):
    """Error path only: pyarrow counts JSON rows within a block, so find the bad line ourselves."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            try:
                if line.strip():
                    json.loads(line)
            except ValueError as err:
                return f"line {number}: not a JSON object ({err.args[0].split(':')[0]}): {line.strip()[:80]!r}"
    return None


def _standardise(table, wanted, path, warnings, line_offset, unit):
    out = {}
    for role in ("user", "item", "event"):
        if role in wanted:
            col = table[wanted[role]].combine_chunks()
            if not pa.types.is_dictionary(col.type):
                col = pc.dictionary_encode(col.cast(pa.string()))
            out[role] = col.cast(DICT)
    if "time" in wanted:
        out["time"] = _parse_time(table[wanted["time"]], path, wanted["time"], warnings, line_offset, unit)
    return pa.table(out)


def _parse_time(col, path, name, warnings, line_offset, unit):
    """Any time column -> int64 epoch seconds, null where the value cannot be parsed."""
    col = col.combine_chunks()
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        seconds = col.cast(pa.timestamp("s", getattr(col.type, "tz", None)), safe=False).cast(pa.int64())
    elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        seconds = _numbers_to_seconds(col)
    else:
        text = pc.utf8_trim_whitespace(col.cast(pa.string()))
        try:
            seconds = _numbers_to_seconds(text.cast(pa.int64()))
        except pa.ArrowInvalid:  # not all integers: numbers and ISO-8601 strings, bad values -> null
            seconds = _parse_mixed_time(text)
    bad = pc.is_null(seconds)
    n_bad = pc.sum(bad).as_py() or 0
    if n_bad:
        row = pc.index(bad, True).as_py()
        where = f"{unit} {row + 1 + line_offset}, column '{name}'"
        if n_bad == len(col):
            raise HfSeqRecError(f"{path}: {where}: cannot parse time {col[row].as_py()!r}, and no other "
                                f"row has a valid time (expected epoch seconds/ms or ISO-8601)")
        warnings.append(f"{path}: {where}: cannot parse time {col[row].as_py()!r}; "
                        f"{n_bad} row(s) with a missing or bad time dropped (bad_timestamp)")
    return seconds


def _numbers_to_seconds(values):
    median = pc.approximate_median(values).as_py()
    if median is not None and abs(median) >= MS_THRESHOLD:
        values = pc.divide(values, 1000)
    if pa.types.is_floating(values.type):
        values = pc.floor(values)
    return values.cast(pa.int64())


def _parse_mixed_time(text):
    is_number = pc.match_substring_regex(text, r"^[+-]?\d+(\.\d*)?$")
    numbers = _numbers_to_seconds(pc.if_else(is_number, text, None).cast(pa.float64()))
    # Normalise ISO-8601 to "YYYY-MM-DD HH:MM:SS+hhmm", then try the layouts it can take.
    iso = pc.replace_substring_regex(text, r"(\d)T(\d)", r"\1 \2")
    iso = pc.replace_substring_regex(iso, r"(:\d\d)\.\d+", r"\1")
    iso = pc.replace_substring_regex(iso, r"Z$", "+0000")
    iso = pc.replace_substring_regex(iso, r"([+-]\d\d):(\d\d)$", r"\1\2")
    layouts = ("%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
    parsed = pc.coalesce(*(pc.strptime(iso, format=f, unit="s", error_is_null=True).cast(pa.int64())
                           for f in layouts))
    return pc.if_else(is_number, numbers, parsed)


def clean(table, keep_events=None, min_user_interactions=5, min_item_interactions=5):
    """Drop bad rows, filter behaviour types, sort by (user, time), de-duplicate, k-core -> Events."""
    n = table.num_rows
    has_time = "time" in table.column_names
    if "event" not in table.column_names:  # a log without behaviour types has one implicit type
        table = table.append_column("event", pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, np.int32)), pa.array(["interaction"])))
    names = {c: table[c].combine_chunks().dictionary for c in ("user", "item", "event")}
    rows = {"user": _codes(table["user"]), "item": _codes(table["item"]), "event": _codes(table["event"])}
    if has_time:
        rows["time"] = pc.fill_null(table["time"], 0).to_numpy()
        rows["time_ok"] = table["time"].is_valid().to_numpy(zero_copy_only=False)
    else:  # the position in the (concatenated) input is the clock
        rows["time"] = np.arange(n, dtype=np.int64)
    del table
    dropped = dict.fromkeys(DROP_REASONS, 0)

    def drop(reason, bad):
        dropped[reason] += int(bad.sum())
        if dropped[reason]:
            for key in rows:
                rows[key] = rows[key][~bad]

    drop("missing_user", rows["user"] < 0)
    drop("missing_item", rows["item"] < 0)
    if has_time:
        drop("bad_timestamp", ~rows.pop("time_ok"))
    drop("missing_event_type", rows["event"] < 0)
    if keep_events:
        drop("event_type_filtered", ~np.isin(rows["event"], _event_codes(names["event"], keep_events)))

    order = _stable_order(rows["user"], rows["time"])
    for key in rows:
        rows[key] = rows[key][order]
    if has_time:  # without timestamps two identical lines are two interactions, not a duplicate
        drop("duplicate", _duplicates(rows))

    # Iterative k-core: removing a user can push an item below its threshold and vice versa, so
    # repeat until a pass removes nothing. Users too short for leave-one-out go in the same loop,
    # since dropping them can also push items below their threshold.
    def per_user():
        return np.bincount(rows["user"], minlength=len(names["user"]))[rows["user"]]

    while True:
        before = len(rows["user"])
        drop("min_user_interactions", per_user() < min_user_interactions)
        drop("too_short_for_split", per_user() < MIN_SEQUENCE_LENGTH)
        per_item = np.bincount(rows["item"], minlength=len(names["item"]))[rows["item"]]
        drop("min_item_interactions", per_item < min_item_interactions)
        if len(rows["user"]) == before:
            break
    if len(rows["user"]) == 0:
        reasons = ", ".join(f"{k}={v}" for k, v in dropped.items() if v)
        raise HfSeqRecError(f"no events left after cleaning {n} rows ({reasons}); check --keep-events "
                            f"and --min-user-interactions / --min-item-interactions")
    return Events(rows["user"], rows["item"], rows["event"], rows["time"], names["user"], names["item"],
                  names["event"], has_time, n, dropped)


def _event_codes(event_names, keep_events):
    known = event_names.to_pylist()
    unknown = [name for name in keep_events if name not in known]
    if unknown:
        raise HfSeqRecError(f"--keep-events: unknown behaviour type '{unknown[0]}' (types in the log: "
                            f"{', '.join(known)})")
    return [known.index(name) for name in keep_events]


def _stable_order(users, times):
    """Row order sorted by (user, time); equal times keep their input order (stable sort)."""
    if len(times) and int(times.max()) - int(times.min()) < 2**32:
        # one int64 key sorts much faster than two; user codes fit in the high 32 bits
        key = (users.astype(np.int64) << 32) | (times - times.min())
        return np.argsort(key, kind="stable")
    return np.lexsort((times, users))


def _duplicates(rows):
    """Mask of rows repeating an earlier (user, item, time, event). Rows are sorted by (user, time),
    so duplicates sit in runs of equal (user, time); only rows in such runs are compared."""
    users, times = rows["user"], rows["time"]
    same = (users[1:] == users[:-1]) & (times[1:] == times[:-1])
    in_run = np.zeros(len(users), bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    candidates = np.flatnonzero(in_run)
    run_id = np.concatenate([[0], np.cumsum(~same)])[candidates]
    items, events = rows["item"][candidates], rows["event"][candidates]
    order = np.lexsort((candidates, events, items, run_id))  # first of equal keys = earliest in file
    key = np.stack([run_id[order], items[order], events[order]])
    repeat = np.all(key[:, 1:] == key[:, :-1], axis=0)
    bad = np.zeros(len(users), bool)
    bad[candidates[order][1:][repeat]] = True
    return bad


def _codes(column):
    """Dictionary column -> int32 numpy codes, -1 for null."""
    return pc.fill_null(column.combine_chunks().indices, -1).to_numpy().astype(np.int32, copy=False)
