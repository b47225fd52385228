"""``attnrec schema show NAME`` and ``attnrec schema validate NAME [FILE]``: the topics' JSON
Schemas (:mod:`attnrec.schemas`, docs/schemas/README.md) from the command line.

NAME is a schema (= default topic) name — ``clicks``, ``recs``, ``clicks.dlq``,
``model-updates``, ``catalog`` — optionally with a major version: ``recs/1`` (the header's
form), ``recs.v1`` or ``recs.v1.json``. ``validate`` reads one JSON value per line from FILE
(or stdin when FILE is absent or ``-``), prints ``line N: <reason>`` for each invalid line and
``K of N lines valid``; blank lines are skipped. Exit status 1 when a line is invalid, else 0.
For clicks and catalog events a line the schema accepts is also given to the worker's own
parser, which is stricter where a schema cannot be (bytes, sizes, time strings): what it
would dead-letter (or drop) is reported too.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable
from typing import IO, Any

import orjson

from attnrec import schemas
from attnrec.errors import ConfigError, InvalidEventError
from attnrec.events import parse_catalog_event, parse_event
from attnrec.settings import Settings

__all__ = ["cmd_show", "cmd_validate", "resolve", "validate_lines"]

_VERSIONED = re.compile(r"^(?P<name>.+?)(?:/(?P<a>[0-9]+)|\.v(?P<b>[0-9]+)(?:\.json)?)$")
#: The worker's own parser of an input topic, run on lines the schema accepts.
_PARSERS: dict[str, Callable[[bytes], Any]] = {"clicks": parse_event, "catalog": parse_catalog_event}


def resolve(text: str) -> tuple[str, int]:
    """``(name, major)`` of ``recs``, ``recs/1``, ``recs.v1`` or ``recs.v1.json``; ConfigError
    (one line naming the valid names) otherwise."""
    name, major = text, None
    m = _VERSIONED.match(text)
    if m and text not in schemas.names():
        name, major = m["name"], int(m["a"] or m["b"])
    if name not in schemas.names():
        raise ConfigError(f"unknown schema {text!r}: one of {', '.join(schemas.names())}")
    majors = schemas.versions(name)
    if major is None:
        return name, majors[-1]
    if major not in majors:
        raise ConfigError(f"schema {name!r} has no version {major}: {', '.join(f'{name}/{v}' for v in majors)}")
    return name, major


def validate_lines(name: str, major: int, lines: Iterable[bytes], out: IO[str]) -> tuple[int, int]:
    """Check each non-blank line; print ``line N: <reason>`` for the invalid ones. Returns
    (valid, checked)."""
    parser = _PARSERS.get(name) if major == schemas.version(name) else None
    valid = checked = 0
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        checked += 1
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            out.write(f"line {n}: not JSON ({exc})\n")
            continue
        errors = schemas.validate(name, obj, major)
        if not errors and parser is not None:
            try:
                parser(line)
            except InvalidEventError as exc:
                errors = [f"valid under the schema, but the worker rejects it: {exc}"]
        if errors:
            out.write(f"line {n}: {'; '.join(errors)}\n")
        else:
            valid += 1
    return valid, checked


def cmd_show(s: Settings, args: argparse.Namespace) -> int:
    """``attnrec schema show NAME``: the schema as JSON on stdout."""
    name, major = resolve(args.name)
    sys.stdout.write(orjson.dumps(schemas.load(name, major), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_validate(s: Settings, args: argparse.Namespace) -> int:
    """``attnrec schema validate NAME [FILE]``: exit 1 when any line is invalid."""
    name, major = resolve(args.name)
    path = args.file
    if path in (None, "-"):
        valid, n = validate_lines(name, major, sys.stdin.buffer, sys.stdout)
    else:
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        with f:
            valid, n = validate_lines(name, major, f, sys.stdout)
    print(f"{valid} of {n} lines valid ({name}/{major})")
    return 0 if valid == n else 1
