"""Event logs users bring (training/logs.py): each format read into events, the mappings, and a
malformed row or mapping named by file, line and value; the same through the commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from attnrec.apps.cli import main
from attnrec.training.data import load_dataset
from attnrec.training.logs import LogSpec, in_time_order, parse_columns, parse_types, read_log, time_ms

from attnrec.errors import DataError

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("ATTNREC_DATA_DIR", REPO.parent / "shared" / "data"))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yoochoose_tsv_sessions_as_keys_and_times_in_ms(tmp_path: Path) -> None:
    p = _write(tmp_path, "yc.txt", "SessionId\tItemId\tTime\n1\t214536502\t1396860669.277\n1\t214536506\t1396860886.998\n"
                                   "2\t7\t1396860000\n")
    evs = list(read_log(p, LogSpec("yoochoose")))
    assert [(e.user_id, e.item_id, e.event_type, e.ts) for e in evs] == [
        ("1", "214536502", "click", 1396860669277), ("1", "214536506", "click", 1396860886998), ("2", "7", "click", 1396860000000)]
    assert [e.event_id for e in evs] == ["yc.txt:2", "yc.txt:3", "yc.txt:4"]
    assert [e.user_id for e in in_time_order(evs)] == ["2", "1", "1"]


def test_yoochoose_challenge_files_clicks_and_buys(tmp_path: Path) -> None:
    clicks = _write(tmp_path, "yoochoose-clicks.dat", "1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500,S\n")
    buys = _write(tmp_path, "yoochoose-buys.dat", "1,2014-04-07T10:56:00.000Z,214536500,1046,1\n")
    evs = list(read_log(tmp_path, LogSpec("yoochoose")))  # a directory: its files by name
    assert [e.event_type for e in evs] == ["purchase", "click", "click"]
    assert evs[1].ts == 1396867869277
    _write(tmp_path, "yoochoose-buys.dat", "1,2014-04-07T10:56:00.000Z,214536500\n")
    with pytest.raises(DataError, match=r"yoochoose-buys\.dat:1: expected session,timestamp,item,category"):
        list(read_log(buys, LogSpec("yoochoose")))
    _write(tmp_path, "yoochoose-clicks.dat", "1,yesterday,214536502,0\n")
    with pytest.raises(DataError, match=r"yoochoose-clicks\.dat:1: time 'yesterday' is not an ISO 8601 time"):
        list(read_log(clicks, LogSpec("yoochoose")))


def test_yoochoose_bad_rows_name_file_line_and_value(tmp_path: Path) -> None:
    p = _write(tmp_path, "yc.txt", "SessionId\tItemId\tTime\n1\t5\t1396860669.2\n1\t6\tsoon\n")
    with pytest.raises(DataError, match=r"yc\.txt:3: time 'soon' is not unix seconds or milliseconds"):
        list(read_log(p, LogSpec("yoochoose")))
    _write(tmp_path, "yc.txt", "SessionId\tItemId\tTime\n1\t5\n")
    with pytest.raises(DataError, match=r"yc\.txt:2: expected SessionId, ItemId and Time \(tab-separated\), got 2"):
        list(read_log(p, LogSpec("yoochoose")))
    _write(tmp_path, "yc.txt", "SessionId\tItemId\tTime\n\t5\t1396860669\n")
    with pytest.raises(DataError, match=r"yc\.txt:2: session is empty"):
        list(read_log(p, LogSpec("yoochoose")))


def test_taobao_behaviours_mapped_category_in_context(tmp_path: Path) -> None:
    p = _write(tmp_path, "ub.csv", "543462,1715,1464116,pv,1511658000\n543462,1715,1464116,buy,1511658060\n9,3,4,fav,1511658001\n")
    evs = list(read_log(p, LogSpec("taobao")))
    assert [(e.user_id, e.item_id, e.event_type, e.ts, e.context) for e in evs] == [
        ("543462", "1715", "view", 1511658000000, {"category": "1464116"}),
        ("543462", "1715", "purchase", 1511658060000, {"category": "1464116"}),
        ("9", "3", "like", 1511658001000, {"category": "4"})]
    evs = list(read_log(p, LogSpec("taobao", types=parse_types("fav=drop,buy=cart"))))
    assert [e.event_type for e in evs] == ["view", "cart"]


def test_taobao_bad_rows(tmp_path: Path) -> None:
    p = _write(tmp_path, "ub.csv", "1,2,3,pv,1511658000\n1,2,3,clk,1511658000\n")
    with pytest.raises(DataError, match=r"ub\.csv:2: event type 'clk' has no mapping; add it to the type mapping"):
        list(read_log(p, LogSpec("taobao")))
    _write(tmp_path, "ub.csv", "1,2,3,pv,1511658000\n1,2,3,pv\n")
    with pytest.raises(DataError, match=r"ub\.csv:2: expected user_id,item_id,category_id,behavior,timestamp, got 4"):
        list(read_log(p, LogSpec("taobao")))
    _write(tmp_path, "ub.csv", "1,2,3,pv,2017-11-26\n")
    with pytest.raises(DataError, match=r"ub\.csv:1: time '2017-11-26' is not unix seconds"):
        list(read_log(p, LogSpec("taobao")))


def test_diginetica_user_or_session_and_bad_rows(tmp_path: Path) -> None:
    p = _write(tmp_path, "views.csv", "session_id;user_id;item_id;timeframe;eventdate\n1;NA;81766;526309;2016-05-09\n2;77;31331;10;2016-05-09\n")
    evs = list(read_log(p, LogSpec("diginetica")))
    assert [(e.user_id, e.item_id, e.event_type) for e in evs] == [("s1", "81766", "view"), ("77", "31331", "view")]
    assert evs[0].ts == 1462752000000 + 526309 and evs[0].context == {"session_id": "1"}
    _write(tmp_path, "views.csv", "session_id;user_id;item_id;timeframe;eventdate\n1;NA;81766;x;2016-05-09\n")
    with pytest.raises(DataError, match=r"views\.csv:2: timeframe 'x' / eventdate '2016-05-09'"):
        list(read_log(p, LogSpec("diginetica")))
    _write(tmp_path, "views.csv", "a;b;c\n")
    with pytest.raises(DataError, match=r"views\.csv:1: not a DIGINETICA item-views header"):
        list(read_log(p, LogSpec("diginetica")))


def test_table_csv_with_header_mapping_and_types(tmp_path: Path) -> None:
    p = _write(tmp_path, "rr.csv", "timestamp,visitorid,event,itemid,transactionid\n"
                                   "1433221332117,257597,view,355908,\n1433224214164,257597,addtocart,248676,\n"
                                   "1433221999827,111016,transaction,318965,1\n")
    spec = LogSpec("table", parse_columns("user=visitorid,item=itemid,type=event,time=timestamp"),
                   parse_types("view=view,addtocart=cart,transaction=purchase"))
    evs = list(read_log(p, spec))
    assert [(e.user_id, e.item_id, e.event_type, e.ts) for e in evs] == [
        ("257597", "355908", "view", 1433221332117), ("257597", "248676", "cart", 1433224214164),
        ("111016", "318965", "purchase", 1433221999827)]
    with pytest.raises(DataError, match=r"rr\.csv:4: event type 'transaction' has no mapping"):
        list(read_log(p, LogSpec("table", spec.columns, {"addtocart": "cart"})))
    spec = LogSpec("table", parse_columns("user=visitorid,item=itemid,type=event,time=when"), {"*": "view"})
    with pytest.raises(DataError, match=r"rr\.csv:1: the header has no column 'when' \(columns: timestamp, visitorid"):
        list(read_log(p, spec))
    _write(tmp_path, "rr.csv", "timestamp,visitorid,event,itemid\n1433221332117,257597,view\n")
    with pytest.raises(DataError, match=r"rr\.csv:2: 3 fields, the header has 4"):
        list(read_log(p, LogSpec("table", parse_columns("user=visitorid,item=itemid,time=timestamp"))))


def test_table_jsonl_iso_times_sessions_and_positional_csv(tmp_path: Path) -> None:
    p = _write(tmp_path, "ev.jsonl", json.dumps({"sid": "a", "sku": "x1", "at": "2024-03-01T10:00:00Z", "cat": "shoes"}) + "\n"
               + json.dumps({"sid": "a", "sku": "x2", "at": "2024-03-01 10:00:05"}) + "\n")
    evs = list(read_log(p, LogSpec("table", parse_columns("session=sid,item=sku,time=at,category=cat"))))
    assert [(e.user_id, e.item_id, e.event_type, e.ts, e.context) for e in evs] == [
        ("a", "x1", "click", 1709287200000, {"category": "shoes", "session_id": "a"}),
        ("a", "x2", "click", 1709287205000, {"session_id": "a"})]
    _write(tmp_path, "ev.jsonl", json.dumps({"sid": "a", "sku": "x1", "at": "later"}) + "\n[1]\n")
    with pytest.raises(DataError, match=r"ev\.jsonl:1: time 'later' is not unix seconds or milliseconds, nor an ISO 8601 time"):
        list(read_log(p, LogSpec("table", parse_columns("session=sid,item=sku,time=at"))))
    _write(tmp_path, "ev.jsonl", "[1]\n")
    with pytest.raises(DataError, match=r"ev\.jsonl:1: expected a JSON object, got list"):
        list(read_log(p, LogSpec("table", parse_columns("session=sid,item=sku,time=at"))))
    q = _write(tmp_path, "plain.tsv", "u1\ti1\t1700000000\nu1\ti2\t1700000000123\n")
    evs = list(read_log(q, LogSpec("table", parse_columns("user=0,item=1,time=2"))))
    assert [e.ts for e in evs] == [1700000000000, 1700000000123]
    _write(tmp_path, "plain.tsv", "u1\ti1\n")
    with pytest.raises(DataError, match=r"plain\.tsv:1: 2 fields, the column mapping reads field 2"):
        list(read_log(q, LogSpec("table", parse_columns("user=0,item=1,time=2"))))


@pytest.mark.parametrize(("spec", "message"), [
    ("user=a,item=b", r"missing time"),
    ("user=a,time=c", r"missing item"),
    ("item=b,time=c", r"missing user \(or session\)"),
    ("user=a,session=s,item=b,time=c", r"give user= or session=, not both"),
    ("user=a,item=b,time=c,price=d", r"unknown role 'price'"),
    ("user=a,item,time=c", r"'item' is not ROLE=COLUMN"),
    ("user=0,item=b,time=c", r"names \(a header\) or numbers \(no header\), not both"),
])
def test_bad_column_mappings(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_columns(spec)


def test_bad_type_mapping_and_times() -> None:
    with pytest.raises(DataError, match=r"'bought' is not an event type"):
        parse_types("buy=bought")
    with pytest.raises(DataError, match=r"'pv' is not VALUE=TYPE"):
        parse_types("pv")
    assert time_ms("1511658000") == 1511658000000 and time_ms(1511658000123) == 1511658000123
    assert time_ms("2017-11-26T01:00:00+01:00") == 1511654400000 and time_ms("2016-05-09") == 1462752000000
    assert time_ms("1511658000", "ms") == 1511658000
    with pytest.raises(ValueError):
        time_ms("2017-11-26", "s")
    with pytest.raises(ValueError):
        time_ms(-5)


def test_training_reads_a_log_with_min_item_support_and_sparsity(tmp_path: Path) -> None:
    rows = "".join(f"{u},{i},7,pv,{1511658000 + 10 * k}\n" for k, (u, i) in enumerate(
        [("1", "a"), ("1", "b"), ("1", "a"), ("2", "a"), ("2", "c"), ("2", "b"), ("3", "d")]))
    p = _write(tmp_path, "ub.csv", rows)
    ds = load_dataset(p, "taobao")
    assert ds.fmt == "events" and ds.has_types and ds.has_time
    assert ds.vocab.items == ["a", "b", "c", "d"]
    assert ds.sparsity["items_one_event"] == 2 and ds.sparsity["median_events_per_item"] == 1.5
    ds2 = load_dataset(p, "taobao", min_item_support=2)
    assert ds2.vocab.items == ["a", "b"]
    assert ds2.users[1].items == [2, 1, 3]  # user 2: a, c (rare: OOV), b
    assert ds2.sparsity["items_below_support"] == 2 and ds2.sparsity["share_events_below_support"] == round(2 / 7, 4)


def test_train_and_replay_commands_name_the_bad_row(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    p = _write(tmp_path, "ub.csv", "1,2,3,pv,1511658000\n1,2,3,pv,1511658001\n1,5,3,pv,oops\n")
    assert main(["train", "--data", str(p), "--format", "taobao", "--out", str(tmp_path / "ckpt"), "--quiet"]) == 2
    assert "ub.csv:3: time 'oops' is not unix seconds" in caplog.text
    caplog.clear()
    # the whole log is read before anything is sent: no broker is needed to find the bad row
    assert main(["replay", "--data", str(p), "--format", "taobao"]) == 2
    assert "ub.csv:3: time 'oops' is not unix seconds" in caplog.text
    assert main(["replay", "--data", str(p), "--format", "taobao", "--columns", "user=0,item=1,time=4"]) == 2
    assert "--columns is for format table" in capsys.readouterr().err
    assert main(["train", "--data", str(p), "--format", "table", "--columns", "user=a,item=b", "--out", str(tmp_path)]) == 2
    assert "column mapping 'user=a,item=b': missing time" in capsys.readouterr().err


def test_the_public_logs_read_whole() -> None:
    yc = list(read_log(DATA_DIR / "yoochoose-100k", LogSpec("yoochoose")))
    assert len(yc) == 70_278 + 13_568 and len({e.user_id for e in yc}) == 17_794 + 3_416
    tb = list(read_log(DATA_DIR / "taobao-timeslice" / "UserBehavior-timeslice.csv", LogSpec("taobao")))
    assert len(tb) == 110_300 and sum(e.event_type == "purchase" for e in tb) == 2_493
    dg = list(read_log(DATA_DIR / "diginetica-sample" / "sample_train-item-views.csv", LogSpec("diginetica")))
    assert len(dg) == 12_391
