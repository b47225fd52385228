"""Is a schema change compatible? :func:`breaking_changes` compares two versions of one schema.

The rules (docs/schemas/README.md): within one major version a schema may only gain what no
reader or writer of the topic can trip over — a new optional property, a wider enum, a looser
bound, new descriptions and examples (a minor version: ``x-attnrec-minor`` + 1). Anything else
needs a new major: a new file ``<name>.v<N+1>.json``, the old one kept (producers send both
for a while, or consumers move first). What counts as breaking here, walking both schemas
together (properties, items, prefixItems, additionalProperties, anyOf/oneOf/allOf, if/then/
else, $defs):

- a property removed, or turned into ``false``;
- ``type`` changed, narrowed or widened (a consumer of a produced topic does not expect the
  new type; a producer to an input topic may send the old one);
- a property newly required, or no longer required (consumers rely on required fields);
- an ``enum`` that lost values or appeared, a ``const`` that appeared or changed;
- ``additionalProperties`` turned ``false`` (or into a schema where anything went);
- a tighter bound: minimum/exclusiveMinimum, maximum/exclusiveMaximum, min/maxLength,
  min/maxItems, min/maxProperties, multipleOf, a new or changed ``pattern``, ``uniqueItems``;
- a branch removed from ``anyOf``/``oneOf``, a new ``allOf``/``anyOf``/``oneOf``/``not``/``if``;
- a changed ``$id`` (the identity a major version stands for).

Annotations (title, description, examples, format, contentEncoding, default, ``x-*``) never
break anything. The checker is deliberately conservative: it may call a harmless rewrite
breaking (then bump the major, or keep the released shape), never the other way round for the
changes listed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["breaking_changes"]

_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains")  # raise = tighter
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains")  # lower = tighter
_SUBSCHEMA = ("items", "contains", "then", "else", "propertyNames", "unevaluatedItems", "unevaluatedProperties")
_SAME = ("if", "not", "dependentRequired", "dependentSchemas", "patternProperties")  # any change: breaking
_NEW_CONSTRAINT = ("allOf", "anyOf", "oneOf", "not", "if", "contains", "propertyNames", "dependentRequired",
                   "dependentSchemas", "patternProperties", "unevaluatedProperties", "unevaluatedItems")


def _types(s: dict[str, Any]) -> set[str] | None:
    t = s.get("type")
    if t is None:
        return None
    return {t} if isinstance(t, str) else set(t)


def breaking_changes(old: Any, new: Any, path: str = "$") -> list[str]:
    """The backward-incompatible differences from ``old`` to ``new`` (schemas as decoded JSON),
    each ``"<where>: <what>"``; empty when ``new`` is a compatible evolution of ``old``."""
    out: list[str] = []
    if old is False:
        return out  # nothing was allowed: anything is wider
    if new is False:
        return [f"{path}: now rejects everything (false)"]
    old = {} if old is True else old
    new = {} if new is True else new
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [f"{path}: not a schema"]

    if path == "$" and old.get("$id") != new.get("$id"):
        out.append(f"{path}: $id changed from {old.get('$id')!r} to {new.get('$id')!r}")
    to, tn = _types(old), _types(new)
    if to != tn:
        if to is None:
            out.append(f"{path}: type restricted to {sorted(tn or ())}")
        else:
            out.append(f"{path}: type changed from {sorted(to)} to {sorted(tn) if tn is not None else 'any'}")

    # properties and required
    po, pn = old.get("properties", {}), new.get("properties", {})
    for name in po:
        if name not in pn:
            out.append(f"{path}.{name}: property removed")
        else:
            out += breaking_changes(po[name], pn[name], f"{path}.{name}")
    ro, rn = set(old.get("required", ())), set(new.get("required", ()))
    out += [f"{path}.{n}: newly required" for n in sorted(rn - ro)]
    out += [f"{path}.{n}: no longer required" for n in sorted(ro - rn)]
    ao, an = old.get("additionalProperties", True), new.get("additionalProperties", True)
    if an is False and ao is not False:
        out.append(f"{path}: additionalProperties turned false")
    elif ao is True and an is not True:
        out.append(f"{path}: additionalProperties restricted to a schema")
    elif isinstance(ao, dict):
        out += breaking_changes(ao, an, f"{path}.additionalProperties")

    # values
    if "enum" in new:
        if "enum" not in old:
            out.append(f"{path}: enum added {new['enum']!r}")
        else:
            gone = [v for v in old["enum"] if v not in new["enum"]]
            if gone:
                out.append(f"{path}: enum narrowed, {gone!r} removed")
    if "const" in new and ("const" not in old or old["const"] != new["const"]):
        out.append(f"{path}: const {new['const']!r} {'added' if 'const' not in old else 'changed'}")
    for kw in _LOWER:
        if kw in new and (kw not in old or new[kw] > old[kw]):
            out.append(f"{path}: {kw} tightened to {new[kw]!r} (was {old.get(kw, 'unset')!r})")
    for kw in _UPPER:
        if kw in new and (kw not in old or new[kw] < old[kw]):
            out.append(f"{path}: {kw} tightened to {new[kw]!r} (was {old.get(kw, 'unset')!r})")
    for kw in ("pattern", "multipleOf"):
        if kw in new and old.get(kw) != new[kw]:
            out.append(f"{path}: {kw} {'added' if kw not in old else 'changed'}: {new[kw]!r}")
    if new.get("uniqueItems") and not old.get("uniqueItems"):
        out.append(f"{path}: uniqueItems turned true")

    # sub-schemas
    for kw in _NEW_CONSTRAINT:
        if kw in new and kw not in old:
            out.append(f"{path}: new constraint {kw}")
    for kw in _SUBSCHEMA:  # a sub-schema dropped constrains less; one kept must not narrow
        if kw in old and kw in new:
            out += breaking_changes(old[kw], new[kw], f"{path}.{kw}")
    for kw in _SAME:  # not monotonic (a narrower if or not can accept less): any change counts
        if kw in old and kw in new and old[kw] != new[kw]:
            out.append(f"{path}: {kw} changed")
    for kw in ("prefixItems", "anyOf", "oneOf", "allOf"):
        lo, ln = old.get(kw, []), new.get(kw, [])
        for i, (a, b) in enumerate(zip(lo, ln, strict=False)):
            out += breaking_changes(a, b, f"{path}.{kw}[{i}]")
        if kw in ("anyOf", "oneOf") and len(ln) < len(lo):
            out.append(f"{path}: {len(lo) - len(ln)} {kw} branch(es) removed")
        if kw in ("allOf", "prefixItems") and kw in old and len(ln) > len(lo):
            out.append(f"{path}: {kw} gained {len(ln) - len(lo)} entr(ies)")
    do, dn = old.get("$defs", {}), new.get("$defs", {})
    for name in do:
        if name not in dn:
            out.append(f"{path}.$defs.{name}: definition removed")
        else:
            out += breaking_changes(do[name], dn[name], f"{path}.$defs.{name}")
    return out
