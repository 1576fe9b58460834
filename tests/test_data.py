"""Data stage: reading every format, each cleaning rule and its count, leave-one-out, vocabularies.

All logs are a few rows written to tmp_path; no shared data files are needed.
"""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hfseqrec.cli import main
from hfseqrec.errors import HfSeqRecError
from hfseqrec.events import Columns, clean, read_events
from hfseqrec.sequences import load_prepared, prepare
from hfseqrec.synth import generate, write
from hfseqrec.vocabulary import MASK_ID, PAD_ID, UNK_ID, EventVocabulary, ItemVocabulary, build_item_tokenizer

# Three users; u1 has a tie at t=30 (i3 before i2 in the file) that must keep file order.
ROWS = [("u1", "i1", 10, "view"), ("u2", "i2", 5, "view"), ("u1", "i3", 30, "view"), ("u1", "i2", 30, "cart"),
        ("u2", "i3", 6, "view"), ("u1", "i4", 40, "purchase"), ("u2", "i1", 7, "view"), ("u3", "i4", 1, "view"),
        ("u3", "i1", 2, "view"), ("u3", "i2", 3, "view")]
EXPECTED = {"u1": ["i1", "i3", "i2", "i4"], "u2": ["i2", "i3", "i1"], "u3": ["i4", "i1", "i2"]}
ALL = {"min_user_interactions": 1, "min_item_interactions": 1}


def write_text(path, lines):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as f:
        f.write("".join(line + "\n" for line in lines))
    return str(path)


def write_csv(path, rows=ROWS, header="user_id,item_id,timestamp,event_type", sep=","):
    return write_text(path, [header] + [sep.join(map(str, row)) for row in rows])


def sequences(out):
    """Prepared directory -> {user: full raw item sequence}, rebuilt from the test split."""
    splits, items, _ = load_prepared(out)
    return {row["user_id"]: items.decode(row["input_ids"] + [row["label"]]) for row in splits["test"]}


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


@pytest.mark.parametrize("name", ["log.csv", "log.tsv", "log.csv.gz", "log.parquet", "log.jsonl", "log.jsonl.gz"])
def test_every_table_format_gives_the_same_sequences(tmp_path, name):
    path = tmp_path / name
    if name.startswith("log.csv"):
        write_csv(path)
    elif name == "log.tsv":
        write_csv(path, header="user_id\titem_id\ttimestamp\tevent_type", sep="\t")
    elif name == "log.parquet":
        pq.write_table(pa.table({k: [r[i] for r in ROWS] for i, k in enumerate(
            ["user_id", "item_id", "timestamp", "event_type"])}), path)
    else:
        write_text(path, [json.dumps(dict(zip(["user_id", "item_id", "timestamp", "event_type"], r, strict=True))) for r in ROWS])
    report = prepare([str(path)], str(tmp_path / "out"), **ALL)
    assert sequences(tmp_path / "out") == EXPECTED
    assert (report["users"], report["items"], report["interactions"]) == (3, 4, 10)
    assert report["event_types"] == {"view": 8, "cart": 1, "purchase": 1} and report["has_timestamps"]


def test_movielens_and_sasrec_formats(tmp_path):
    dat = write_text(tmp_path / "ratings.dat", [f"{u}::{i}::5::{t}" for u, i, t in
                                                 [(1, 10, 300), (2, 10, 5), (1, 20, 100), (1, 30, 200), (2, 20, 6),
                                                  (2, 30, 7)]])
    prepare([dat], str(tmp_path / "ml"), format="movielens", **ALL)
    assert sequences(tmp_path / "ml") == {"1": [20, 30, 10], "2": [10, 20, 30]}  # ints come back as ints
    txt = write_text(tmp_path / "seq.txt.gz", ["1 5", "1 3", "2 3", "1 4", "2 5", "2 4"])
    report = prepare([txt], str(tmp_path / "sas"), format="sasrec", **ALL)
    assert sequences(tmp_path / "sas") == {"1": [5, 3, 4], "2": [3, 5, 4]}
    assert report["format"] == "sasrec" and not report["has_timestamps"]
    splits, _, events = load_prepared(tmp_path / "sas")
    assert splits["test"][0]["timestamps"] == [0, 1]  # no time: the position in the user's sequence
    assert events.names == ["[PAD]", "[UNK]", "interaction"]


def test_multiple_inputs_concatenate_in_order_and_ties_keep_file_order(tmp_path):
    first = write_csv(tmp_path / "a.csv", [("u1", "i1", 5), ("u1", "i2", 5)], "user_id,item_id,timestamp")
    second = write_csv(tmp_path / "b.csv", [("u1", "i0", 5), ("u1", "i3", 1)], "user_id,item_id,timestamp")
    prepare([second, first], str(tmp_path / "ba"), **ALL)
    assert sequences(tmp_path / "ba") == {"u1": ["i3", "i0", "i1", "i2"]}
    prepare([first, second], str(tmp_path / "ab"), **ALL)
    assert sequences(tmp_path / "ab") == {"u1": ["i3", "i1", "i2", "i0"]}


def test_each_cleaning_rule_is_counted(tmp_path):
    rows = ROWS + [("", "i1", 50, "view"),  # missing user
                   ("u1", "", 50, "view"),  # missing item
                   ("u1", "i1", "soon", "view"), ("u2", "i1", "", "view"),  # bad / missing time
                   ("u1", "i1", 10, "view"),  # exact duplicate of the first row
                   ("u1", "i1", 10, "cart"),  # same time, other behaviour: kept
                   ("u3", "i3", 9, "fav")]  # filtered by --keep-events
    path = write_csv(tmp_path / "log.csv", rows)
    report = prepare([path], str(tmp_path / "out"), keep_events=["view", "cart", "purchase"], **ALL)
    assert report["dropped"] == {"missing_user": 1, "missing_item": 1, "bad_timestamp": 2, "missing_event_type": 0,
                                 "event_type_filtered": 1, "duplicate": 1, "min_user_interactions": 0,
                                 "min_item_interactions": 0, "too_short_for_split": 0}
    assert report["interactions"] == 11 and report["rows_read"] == len(rows)
    assert "line 14, column 'timestamp'" in report["warnings"][0] and "'soon'" in report["warnings"][0]
    assert sequences(tmp_path / "out")["u1"] == ["i1", "i1", "i3", "i2", "i4"]


def test_iterative_k_core_and_too_short_users(tmp_path):
    # With min 2/2: u3 has 1 event -> dropped; that leaves items b and x with 1 event each -> dropped;
    # that leaves u2 with 1 event -> dropped; u1 (a, a, c, c) survives. Only iterating finds u2.
    rows = [("u1", "a", 1), ("u1", "a", 2), ("u1", "c", 3), ("u1", "c", 4), ("u2", "b", 1), ("u2", "a", 2),
            ("u3", "b", 1), ("u2", "x", 3)]
    table, _, _ = read_events([write_csv(tmp_path / "k.csv", rows, "user_id,item_id,timestamp")])
    events = clean(table, min_user_interactions=2, min_item_interactions=2)
    assert events.dropped["min_user_interactions"] == 1 + 1  # u3, then u2 once b and x are gone
    assert events.dropped["min_item_interactions"] == 2  # b and x after u3 went
    assert set(events.user_names.take(pa.array(np.unique(events.users))).to_pylist()) == {"u1"}
    # k-core 1/1 keeps u3, but a single event is too short for leave-one-out
    events = clean(table, min_user_interactions=1, min_item_interactions=1)
    assert events.dropped["too_short_for_split"] == 1 and events.dropped["min_user_interactions"] == 0


def test_leave_one_out_boundaries(tmp_path):
    prepare([write_csv(tmp_path / "log.csv")], str(tmp_path / "out"), **ALL)
    splits, items, events = load_prepared(tmp_path / "out")
    full = sequences(tmp_path / "out")
    for name in ("train", "validation", "test"):
        assert splits[name].num_rows == 3
        assert str(splits[name].features["input_ids"]) == "List(Value('int32'))"
    for train, valid, test in zip(splits["train"], splits["validation"], splits["test"], strict=True):
        s = items.encode(full[test["user_id"]])
        assert train["input_ids"] == valid["input_ids"] == s[:-2]
        assert valid["label"] == s[-2] and test["label"] == s[-1] and test["input_ids"] == s[:-1]
        assert len(test["event_type_ids"]) == len(test["timestamps"]) == len(s) - 1
        assert test["timestamps"] == sorted(test["timestamps"])
    u1 = splits["test"].filter(lambda r: r["user_id"] == "u1")[0]
    assert events.names[u1["label_event_type_id"]] == "purchase" and u1["timestamps"] == [10, 30, 30]


def test_iso_and_millisecond_timestamps(tmp_path):
    iso = write_csv(tmp_path / "iso.csv", [("u1", "a", "2024-01-01T10:00:00Z"), ("u1", "b", "2024-01-01 09:00:00"),
                                           ("u1", "c", "2024-01-01T12:00:00.5+02:00"), ("u1", "d", "2023-12-31")],
                    "user_id,item_id,timestamp")
    prepare([iso], str(tmp_path / "iso"), **ALL)
    test = load_prepared(tmp_path / "iso")[0]["test"][0]
    assert sequences(tmp_path / "iso") == {"u1": ["d", "b", "a", "c"]}  # a and c are both 10:00 UTC
    assert test["timestamps"] == [1703980800, 1704099600, 1704103200]
    ms = write_csv(tmp_path / "ms.csv", [("u1", "a", 1704103200000), ("u1", "b", 1704099600000),
                                         ("u1", "c", 1704099601999)], "user_id,item_id,timestamp")
    prepare([ms], str(tmp_path / "ms"), **ALL)
    assert load_prepared(tmp_path / "ms")[0]["test"][0]["timestamps"] == [1704099600, 1704099601]


@pytest.mark.parametrize("raw, expected_type", [(["i10", "i2", "x"], "str"), ([10, 2, 300], "int"),
                                                (["007", "7"], "str")])
def test_item_vocabulary_round_trip(tmp_path, raw, expected_type):
    vocab = ItemVocabulary(build_item_tokenizer(raw, max_len=50))
    assert (PAD_ID, MASK_ID, UNK_ID) == (0, 1, 2) and vocab.item_id_type == expected_type
    vocab.save_pretrained(tmp_path / "v")
    loaded = ItemVocabulary.from_pretrained(str(tmp_path / "v"))
    ids = loaded.encode(raw + ["never-seen"])
    assert ids == [3, 4, 5][: len(raw)] + [UNK_ID] and len(loaded) == len(raw) + 3 == loaded.num_items + 3
    assert loaded.decode(ids[:-1]) == raw and loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.model_max_length == 50 and loaded.tokenizer.pad_token_id == PAD_ID


def test_event_vocabulary_and_item_order(tmp_path):
    events = EventVocabulary.from_types(["view", "cart"])
    events.save(str(tmp_path))
    assert EventVocabulary.load(str(tmp_path)).encode(["cart", "view", "zzz"]) == [3, 2, 1]
    prepare([write_csv(tmp_path / "log.csv")], str(tmp_path / "out"), **ALL)
    items = ItemVocabulary.from_pretrained(str(tmp_path / "out"))
    assert items.decode([3, 4, 5, 6]) == ["i1", "i2", "i3", "i4"]  # by count (3, 3, 2, 2), ties by ID


def test_synthetic_log_structure(tmp_path):
    table = generate(users=50, items=40, events_per_user_mean=20, seed=3)
    assert table.column_names == ["user_id", "item_id", "timestamp", "event_type"]
    users = table["user_id"].to_pylist()
    items, types, times = (table[c].to_pylist() for c in ("item_id", "event_type", "timestamp"))
    for k in range(1, len(users)):
        if users[k] == users[k - 1]:
            assert times[k] > times[k - 1]
        if types[k] != "view":  # funnel: a cart/purchase follows an event on the same item
            assert users[k] == users[k - 1] and items[k] == items[k - 1]
    assert items[0].startswith("i") and users[0] == "u0"
    write(table, str(tmp_path / "s.csv.gz"))
    write(table, str(tmp_path / "s.parquet"))
    assert pq.read_table(tmp_path / "s.parquet").num_rows == table.num_rows
    report = prepare([str(tmp_path / "s.csv.gz")], str(tmp_path / "out"))
    assert report["interactions"] + sum(report["dropped"].values()) == table.num_rows


def test_cli_prepare_and_synth(tmp_path, capsys):
    code, _ = run_cli(capsys, "synth", tmp_path / "s.csv", "--users", 30, "--items", 20)
    assert code == 0
    code, _ = run_cli(capsys, "prepare", tmp_path / "s.csv", "--output", tmp_path / "out", "--keep-events", "view")
    assert code == 0 and json.loads((tmp_path / "out" / "prepare_report.json").read_text())["event_types"].keys() == {
        "view"}


def bad_inputs(tmp_path):
    good = "user_id,item_id,timestamp"
    return {
        "missing file": ([tmp_path / "nope.csv"], "nope.csv: no such file"),
        "unknown format": ([write_text(tmp_path / "log.txt", ["1 2"])], "pass --format"),
        "missing column": ([write_text(tmp_path / "a.csv", ["user,item_id", "u1,i1"])], "missing user column 'user_id'"),
        "wrong field count": ([write_text(tmp_path / "b.csv", [good, "u1,i1,1", "u1,i2", "u1,i3,3"])],
                              "line 3: expected 3 fields"),
        "no valid time": ([write_text(tmp_path / "c.csv", [good, "u1,i1,abc", "u1,i2,later"])],
                          "line 2, column 'timestamp': cannot parse time 'abc'"),
        "bad json line": ([write_text(tmp_path / "g.jsonl", ['{"user_id": "u1", "item_id": "a"}', '{"user_id": '])],
                          "g.jsonl: line 2: not a JSON object"),
        "empty file": ([write_text(tmp_path / "d.csv", [])], "d.csv: empty file"),
        "header only": ([write_text(tmp_path / "e.csv", [good])], "e.csv: no rows"),
        "all filtered": ([write_text(tmp_path / "f.csv", [good, "u1,i1,1", "u1,i2,2"])], "no events left"),
    }


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    for case, (inputs, expected) in bad_inputs(tmp_path).items():
        code, lines = run_cli(capsys, "prepare", *inputs, "--output", tmp_path / "out")
        assert code == 2 and len(lines) == 1, (case, lines)
        assert expected in lines[0] and lines[0].startswith("hfseqrec prepare: error:"), (case, lines)


def test_load_prepared_errors(tmp_path):
    with pytest.raises(HfSeqRecError, match="no such directory"):
        load_prepared(str(tmp_path / "missing"))
    with pytest.raises(HfSeqRecError, match="not a prepared directory"):
        load_prepared(str(tmp_path))
    with pytest.raises(HfSeqRecError, match="unknown behaviour type 'buy'"):
        prepare([write_csv(tmp_path / "log.csv")], str(tmp_path / "out"), keep_events=["buy"], **ALL)
    with pytest.raises(HfSeqRecError, match="missing time column 'ts'"):
        read_events([write_csv(tmp_path / "log.csv")], columns=Columns(time="ts"))
