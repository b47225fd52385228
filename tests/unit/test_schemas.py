"""The topics' JSON Schemas (attnrec/schemas): well-formed, documented, rendered into
docs/schemas/, compatible with their released copies, and the `attnrec schema` command.

The drift between the schemas and the code (parser, recommend, dead letters) is
tests/unit/test_schema_drift.py's.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from attnrec.apps.cli import main as cli_main
from attnrec.apps.schema import resolve, validate_lines
from jsonschema import Draft202012Validator

from attnrec import schemas
from attnrec.errors import ConfigError
from attnrec.registry import Registry
from attnrec.schemas.compat import breaking_changes

REPO = Path(__file__).resolve().parents[2]
RELEASED = Path(__file__).resolve().parent / "released_schemas"
TOPICS = ("clicks", "recs", "clicks.dlq", "model-updates", "catalog")


# ------------------------------------------------------------------------------ the files
def test_every_topic_has_a_schema_with_a_urn_id_title_and_descriptions() -> None:
    assert schemas.names() == list(TOPICS)
    for name in schemas.names():
        for major in schemas.versions(name):
            sc = schemas.load(name, major)
            Draft202012Validator.check_schema(sc)
            assert sc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
            assert sc["$id"] == schemas.schema_id(name, major) == f"attnrec:{name}:{major}"
            assert "://" not in sc["$id"]
            assert sc["title"] and sc["description"] and isinstance(sc.get("x-attnrec-minor"), int)
            undocumented = [p for p, s in sc.get("properties", {}).items() if not s.get("description")]
            assert not undocumented, f"{name}: properties without a description: {undocumented}"
            assert sc["examples"], name
            for ex in sc["examples"]:
                assert schemas.validate(name, ex, major) == [], (name, ex)


def test_loader_api() -> None:
    assert schemas.version("recs") == 1 and schemas.versions("clicks.dlq") == [1] and schemas.minor("recs") == 1 and schemas.minor("clicks") == 0
    assert schemas.header("recs") == ("attnrec-schema", b"recs/1")
    assert schemas.header("clicks.dlq") == ("attnrec-schema", b"clicks.dlq/1")
    assert schemas.files() == [f"{n}.v1.json" for n in TOPICS]
    a = schemas.load("recs")
    a["title"] = "changed"
    assert schemas.load("recs")["title"] == "Recommendation", "load returns a copy"
    assert schemas.load_file("recs.v1.json") == schemas.load("recs", 1)
    errs = schemas.validate("recs", {"user_id": "u", "items": [{"item_id": "a", "score": "high"}]})
    assert "$.items[0].score: 'high' is not of type 'number'" in errs
    assert "$: 'trigger_event_id' is a required property" in errs
    with pytest.raises(ConfigError, match="unknown schema 'nope': one of clicks, recs, clicks.dlq, model-updates, catalog"):
        schemas.load("nope")
    with pytest.raises(ConfigError, match="no version 7"):
        schemas.load("recs", 7)
    with pytest.raises(ConfigError, match="unknown schema file"):
        schemas.load_file("../settings.py")


def test_the_worker_stamps_the_schema_header_it_documents() -> None:
    from attnrec.stream.core.output import DLQ_SCHEMA, RECS_SCHEMA

    assert RECS_SCHEMA == ("attnrec-schema", b"recs/1") and DLQ_SCHEMA == ("attnrec-schema", b"clicks.dlq/1")
    readme = (REPO / "docs" / "schemas" / "README.md").read_text()
    assert "`recs/1`" in readme and "`clicks.dlq/1`" in readme


def test_the_schemas_ship_in_the_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "schemas/*.json" in project["tool"]["setuptools"]["package-data"]["attnrec"]
    assert any(d.startswith("jsonschema==") for d in project["project"]["dependencies"])


def test_rendered_docs_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_schema_docs", REPO / "deploy" / "gen_schema_docs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, "docs/schemas/ is stale: run python deploy/gen_schema_docs.py"
    for f in schemas.files():
        assert json.loads((REPO / "docs" / "schemas" / f).read_text()) == schemas.load_file(f)


def test_a_registry_history_entry_is_a_valid_model_update(tmp_path: Path) -> None:
    """Nothing produces to model-updates today; its schema is the registry's history entry."""
    entry = Registry(tmp_path).record("v2", decision="rejected", reason="gate", figures={"new_ndcg@10": 0.1},
                                      previous="v1")
    assert schemas.validate("model-updates", json.loads(json.dumps(entry))) == []
    assert schemas.validate("model-updates", {**entry, "previous": None, "figures": {}}) == []


# ------------------------------------------------------------------------------ compatibility
def test_every_released_schema_is_still_shipped_and_compatible() -> None:
    released = sorted(RELEASED.glob("*.json"))
    assert {p.name for p in released} >= {f"{n}.v1.json" for n in TOPICS}
    problems = []
    for p in released:
        old = json.loads(p.read_text())
        if p.name not in schemas.files():
            problems.append(f"{p.name}: released, no longer shipped (a major is kept once released)")
            continue
        new = schemas.load_file(p.name)
        problems += [f"{p.name} {c}" for c in breaking_changes(old, new)]
        if new.get("x-attnrec-minor", 0) < old.get("x-attnrec-minor", 0):
            problems.append(f"{p.name}: x-attnrec-minor went down")
    assert not problems, ("backward-incompatible schema changes (bump the major: a new <name>.v<N+1>.json, "
                          "see docs/schemas/README.md):\n" + "\n".join(problems))


BASE: dict[str, Any] = {
    "$id": "attnrec:x:1",
    "type": "object",
    "required": ["a"],
    "properties": {
        "a": {"type": "string", "maxLength": 10},
        "b": {"enum": ["x", "y"]},
        "c": {"type": "array", "items": {"type": "object", "properties": {"d": {"type": "number", "minimum": 0}}}},
        "t": {"anyOf": [{"type": "number"}, {"type": "string"}]},
    },
}


def changed(path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    """BASE with the value at a dotted path replaced (or deleted)."""
    s = json.loads(json.dumps(BASE))
    *parents, last = path.split(".")
    node = s
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if delete:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return s


@pytest.mark.parametrize(("new", "expect"), [
    (changed("properties.b", delete=True), "$.b: property removed"),
    (changed("properties.c.items.properties.d", delete=True), "$.c.items.d: property removed"),
    (changed("properties.a.type", "integer"), "$.a: type changed from ['string'] to ['integer']"),
    (changed("properties.a.type", ["string", "null"]), "$.a: type changed"),
    (changed("properties.c.items.properties.d.type", "integer"), "$.c.items.d: type changed"),
    (changed("required", ["a", "b"]), "$.b: newly required"),
    (changed("required", []), "$.a: no longer required"),
    (changed("properties.b.enum", ["x"]), "$.b: enum narrowed, ['y'] removed"),
    (changed("properties.a.enum", ["p"]), "$.a: enum added"),
    (changed("additionalProperties", False), "$: additionalProperties turned false"),
    (changed("properties.c.items.additionalProperties", False), "$.c.items: additionalProperties turned false"),
    (changed("properties.a.maxLength", 5), "$.a: maxLength tightened to 5"),
    (changed("properties.a.minLength", 1), "$.a: minLength tightened to 1"),
    (changed("properties.c.items.properties.d.minimum", 1), "$.c.items.d: minimum tightened"),
    (changed("properties.a.pattern", "^a"), "$.a: pattern added"),
    (changed("properties.t.anyOf", [{"type": "number"}]), "$.t: 1 anyOf branch(es) removed"),
    (changed("properties.t.anyOf.1.type", "boolean"), "$.t.anyOf[1]: type changed"),
    (changed("properties.a", False), "$.a: now rejects everything"),
    (changed("$id", "attnrec:x:2"), "$: $id changed"),
    (changed("allOf", [{"required": ["b"]}]), "$: new constraint allOf"),
])  # fmt: skip
def test_the_checker_finds_breaking_changes(new: dict[str, Any], expect: str) -> None:
    found = breaking_changes(BASE, new)
    assert any(f.startswith(expect) for f in found), found


@pytest.mark.parametrize("new", [
    BASE,
    changed("properties.e", {"type": "string", "description": "a new optional property"}),
    changed("properties.b.enum", ["x", "y", "z"]),
    changed("properties.a.maxLength", 20),
    changed("properties.c.items.properties.d.minimum", -1),
    changed("properties.a.description", "better words"),
    changed("properties.t.anyOf", [{"type": "number"}, {"type": "string"}, {"type": "null"}]),
    changed("examples", [{"a": "x"}]),
    changed("x-attnrec-minor", 1),
])  # fmt: skip
def test_the_checker_lets_compatible_changes_pass(new: dict[str, Any]) -> None:
    assert breaking_changes(BASE, new) == []


def test_a_major_bump_is_how_a_breaking_change_lands() -> None:
    """A breaking v2 is compared with nothing released yet; v1 stays, unchanged, and passes."""
    v2 = changed("properties.b", delete=True) | {"$id": "attnrec:x:2"}
    released = {"x.v1.json": BASE}
    shipped = {"x.v1.json": BASE, "x.v2.json": v2}
    assert all(breaking_changes(old, shipped[f]) == [] for f, old in released.items())
    assert breaking_changes(BASE, v2)  # the same change inside v1 would have failed


# ------------------------------------------------------------------------------ the command
def test_schema_show_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["schema", "show", "recs"]) == 0
    assert json.loads(capsys.readouterr().out) == schemas.load("recs")
    for spelling in ("clicks.dlq/1", "clicks.dlq.v1", "clicks.dlq.v1.json"):
        assert cli_main(["schema", "show", spelling]) == 0
        assert json.loads(capsys.readouterr().out)["$id"] == "attnrec:clicks.dlq:1"


def test_a_bad_name_is_one_line_naming_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["schema", "show", "reccs"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "attnrec: error: unknown schema 'reccs': one of clicks, recs, clicks.dlq, model-updates, catalog"
    assert cli_main(["schema", "validate", "recs/9", "-"]) == 2
    assert capsys.readouterr().err.strip() == "attnrec: error: schema 'recs' has no version 9: recs/1"
    assert resolve("clicks") == ("clicks", 1) and resolve("model-updates/1") == ("model-updates", 1)


GOOD_CLICK = b'{"event_id":"e1","user_id":"u1","item_id":"i1","event_type":"view","ts":"2025-11-28T03:20:00Z"}'


def test_schema_validate_reports_each_invalid_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join([
        GOOD_CLICK,
        b"",  # blank lines are skipped, not counted
        b"{not json",
        b'{"event_id":"e2","user_id":"u1","item_id":"i1","event_type":"view"}',
        b'{"event_id":"e3","user_id":"u1","item_id":"i1","event_type":"view","ts":-1}',
        b'{"event_id":"e4","user_id":"u1","item_id":"' + "é".encode() * 200 + b'","event_type":"x","ts":1}',
        GOOD_CLICK.replace(b"e1", b"e5"),
    ]) + b"\n")  # fmt: skip
    assert cli_main(["schema", "validate", "clicks", str(f)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("line 3: not JSON")
    assert lines[1] == "line 4: $: 'ts' is a required property"
    assert lines[2].startswith("line 5: $.ts: -1 is not valid under any of the given schemas")
    assert lines[3] == ("line 6: valid under the schema, but the worker rejects it: "
                        "invalid event: field 'item_id' longer than 256 bytes")
    assert lines[4] == "2 of 6 lines valid (clicks/1)"
    assert len(lines) == 5


def test_schema_validate_reads_stdin_and_exits_0_when_all_are_valid(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    rec = json.dumps(schemas.load("recs")["examples"][0]).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(rec + b"\n" + rec + b"\n")))
    assert cli_main(["schema", "validate", "recs"]) == 0
    assert capsys.readouterr().out.splitlines() == ["2 of 2 lines valid (recs/1)"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert cli_main(["schema", "validate", "recs", "-"]) == 0
    assert capsys.readouterr().out.strip() == "0 of 0 lines valid (recs/1)"


def test_schema_validate_of_a_missing_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["schema", "validate", "recs", str(tmp_path / "nope.jsonl")]) == 2
    assert capsys.readouterr().err.strip().startswith("attnrec: error: cannot read ")


def test_validate_lines_of_a_catalog_uses_the_catalog_parser() -> None:
    out = io.StringIO()
    lines = [b'{"event_id":"c1","item_id":"p1","status":"stock","count":3,"ts":1}',
             b'{"event_id":"c2","item_id":"p1","status":"stock","count":3.0,"ts":1}',
             b'{"event_id":"c3","item_id":"p1","status":"sold","ts":1}']
    assert validate_lines("catalog", 1, lines, out) == (1, 3)
    got = out.getvalue().splitlines()
    assert got[0] == ("line 2: valid under the schema, but the worker rejects it: "
                      "invalid catalog event: status 'stock' needs a field 'count' >= 0")
    assert got[1].startswith("line 3: $.status: 'sold' is not one of")


# ------------------------------------------------------------------------------ the dashboard's route
class _NoCollector:
    def start(self) -> None: ...
    def stop(self) -> None: ...


async def test_the_dashboard_serves_the_package_schemas_read_only(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from attnrec.apps.dashboard.web import create_dashboard_app

    from attnrec.settings import Settings

    s = Settings(registry=tmp_path / "registry", redis_url="redis://127.0.0.1:1/0")
    app = create_dashboard_app(s, collector=_NoCollector())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/schemas/recs.v1.json")
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/schema+json")
        assert json.loads(await r.read()) == schemas.load("recs")
        r = await client.get("/schemas/settings.py")
        assert r.status == 404 and "recs.v1.json" in (await r.json())["error"]
        assert (await client.post("/schemas/recs.v1.json")).status == 405
    js = (REPO / "apps" / "dashboard" / "static" / "dashboard" / "dashboard.js").read_text()
    assert 'href="/schemas/recs.v1.json"' in js and "recommendation schema" in js
