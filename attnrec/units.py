"""Values as settings write them: durations (``10m``, ``250ms``), rates (``1000``, ``max``), boosts."""

from __future__ import annotations

import re

__all__ = ["parse_boosts", "parse_duration", "parse_rate"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str | float) -> float:
    """'10m' -> 600.0; '30s', '1.5h', '250ms', '2d' and bare seconds work too."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration such as 30s, 10m or 1h, got {text!r}")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[unit]


def parse_rate(text: str | float | None) -> float | None:
    """Events per second: a positive number, or 'max' (None: as fast as possible)."""
    if text is None or str(text).strip().lower() == "max":
        return None
    try:
        r = float(text)
    except ValueError:
        raise ValueError(f"expected a positive number of events/s or 'max', got {text!r}") from None
    if not r > 0:
        raise ValueError(f"expected a positive number of events/s or 'max', got {text!r}")
    return r


def parse_boosts(text: str) -> dict[tuple[str, str], float]:
    """``category:beauty=1.5,item:sku-7=3`` -> {("category", "beauty"): 1.5, ("item", "sku-7"): 3.0}."""
    out: dict[tuple[str, str], float] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        kind, _, rest = part.partition(":")
        name, eq, value = rest.rpartition("=")
        try:
            boost = float(value)
        except ValueError:
            eq = ""
        if kind not in ("category", "item") or not name or not eq or boost != boost:
            raise ValueError(f"expected category:NAME=NUMBER or item:ID=NUMBER, comma-separated; got {part!r}")
        out[(kind, name)] = boost
    return out
