"""The JSON Schemas (draft 2020-12) of every topic's value, shipped in the package.

One file per schema and major version, ``<name>.v<major>.json`` beside this module, named after
the topic's default name (``clicks``, ``recs``, ``clicks.dlq``, ``model-updates``, ``catalog``).
Each has a URL-free ``$id`` ``attnrec:<name>:<major>`` and a minor version in
``x-attnrec-minor`` (compatible additions). A new major is a new file; the old one is kept.
The rules, and the table of topics, are in docs/schemas/README.md (rendered from these files by
``deploy/gen_schema_docs.py``); :mod:`attnrec.schemas.compat` tells a compatible change from
a breaking one.

The worker still validates clicks with :func:`attnrec.events.parse_event` (fast); tests keep
the two in agreement. Records the worker produces carry the header ``attnrec-schema:
<name>/<major>`` (:func:`header`). Validation here (:func:`validate`) is for tools, tests
and consumers; ``jsonschema`` is imported only when it is used.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

from attnrec.errors import ConfigError

__all__ = ["HEADER", "ORDER", "DIR", "names", "files", "versions", "version", "minor", "load", "load_file",
           "schema_id", "header", "validate", "validator"]

#: The Kafka header naming a produced record's schema: ``<name>/<major>``, e.g. ``recs/1``.
HEADER = "attnrec-schema"
#: The schemas in the order of docs/DESIGN.md's topic table.
ORDER = ("clicks", "recs", "clicks.dlq", "model-updates", "catalog")
DIR = Path(__file__).resolve().parent
_FILE = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)\.v(?P<major>[1-9][0-9]*)\.json$")


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, dict[int, str]]:
    """name -> major -> file name, for every schema file beside this module."""
    out: dict[str, dict[int, str]] = {}
    for p in DIR.glob("*.json"):
        m = _FILE.match(p.name)
        if m:
            out.setdefault(m["name"], {})[int(m["major"])] = p.name
    return out


def names() -> list[str]:
    """The schema names: the topics, in :data:`ORDER` (any others after, sorted)."""
    have = _index()
    return [n for n in ORDER if n in have] + sorted(set(have) - set(ORDER))


def files() -> list[str]:
    """Every schema file name, ``<name>.v<major>.json``, by name then major."""
    have = _index()
    return [have[n][v] for n in names() for v in sorted(have[n])]


def _majors(name: str) -> dict[int, str]:
    have = _index()
    if name not in have:
        raise ConfigError(f"unknown schema {name!r}: one of {', '.join(names())}")
    return have[name]


def versions(name: str) -> list[int]:
    """The major versions shipped for ``name``, oldest first."""
    return sorted(_majors(name))


def version(name: str) -> int:
    """The current (newest) major version of ``name``."""
    return max(_majors(name))


@functools.lru_cache(maxsize=64)
def _read(file_name: str) -> dict[str, Any]:
    m = _FILE.match(file_name)
    if m is None or file_name not in _index().get(m["name"], {}).values():
        raise ConfigError(f"unknown schema file {file_name!r}: one of {', '.join(files())}")
    return json.loads((DIR / file_name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def load_file(file_name: str) -> dict[str, Any]:
    """The schema in ``file_name`` (e.g. ``recs.v1.json``); a copy, safe to change."""
    return copy.deepcopy(_read(file_name))


def load(name: str, major: int | None = None) -> dict[str, Any]:
    """The schema of ``name`` (the current major unless ``major`` is given); a copy."""
    majors = _majors(name)
    v = max(majors) if major is None else major
    if v not in majors:
        raise ConfigError(f"schema {name!r} has no version {v}: {', '.join(map(str, sorted(majors)))}")
    return load_file(majors[v])


def minor(name: str, major: int | None = None) -> int:
    """The minor version (``x-attnrec-minor``) of a schema: compatible changes since its major."""
    return int(load(name, major).get("x-attnrec-minor", 0))


def schema_id(name: str, major: int) -> str:
    """The ``$id`` a schema file must carry: ``attnrec:<name>:<major>``."""
    return f"attnrec:{name}:{major}"


def header(name: str) -> tuple[str, bytes]:
    """The ``attnrec-schema`` Kafka header of a record of ``name``'s current major."""
    return HEADER, f"{name}/{version(name)}".encode()


@functools.lru_cache(maxsize=32)
def validator(name: str, major: int | None = None) -> Any:
    """A (cached) ``jsonschema`` draft 2020-12 validator of ``name``. ``format`` is an
    annotation, as the draft's default: the patterns and types are what is checked."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load(name, major))


def _where(path: Any) -> str:
    out = "$"
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def validate(name: str, obj: Any, major: int | None = None) -> list[str]:
    """Why ``obj`` (decoded JSON) is not a valid ``name`` value: one message per error, each
    starting with where it is (``$.items[0].score: ...``); an empty list when it is valid."""
    errors = sorted(validator(name, major).iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{_where(e.absolute_path)}: {_short(e.message)}" for e in errors]


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
