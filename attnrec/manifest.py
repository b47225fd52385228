"""The contract between the offline half (training, export) and the online half (the worker).

A registry version is a directory of three files; this module says what they must hold and
checks it, with the standard library only (no onnxruntime, no torch):

    <version>/model.onnx       the serving graph (inputs/outputs below)
    <version>/manifest.json    the fields of REQUIRED_FIELDS, and more (docs/DESIGN.md)
    <version>/items.json       the item vocabulary: entry i is the item id of model index i + 2
    <version>/step.onnx        incremental models only: the step graph (below)
    <version>/item_attributes.csv|.jsonl   models with item content only: the attribute file the
                               item table was built from (``attributes_file``, ``attributes_sha256``);
                               for the record: the graph's item table already holds the content

Two kinds of model. A window model (``positions`` absent or "absolute") has one graph that
scores a user's last ``max_len`` events. An incremental model (``positions: "relative"``) has
two: the full graph (``model.onnx``) reads up to ``history_len`` events and also returns every
block's keys and values of the last ``max_len - 1`` of them (``cache``, ``cache_len``); the
step graph (``step.onnx``) takes one new event per row with that cache and returns the same
top-K, the attention over the new event's window and the new event's keys and values
(``new_kv``), which the worker rolls into its cache.

Vocabularies, the same offline and online:

- items: index 0 = PAD, 1 = OOV (an item the model has never seen), real items 2..n_items-1;
- event types: index 0 = PAD, then :data:`attnrec.events.EVENT_TYPES` order;
- time gaps: index 0 = PAD / unknown, then log2-second buckets of the gap to the previous
  event: ``bucket = 1 + #(boundaries <= gap_ms)`` with :func:`gap_boundaries_ms`, which the
  manifest carries so the worker needs no training code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from attnrec.errors import ModelCheckError

__all__ = [
    "PAD",
    "OOV",
    "N_GAP_BUCKETS",
    "gap_boundaries_ms",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "ITEMS_FILE",
    "STEP_FILE",
    "INPUTS",
    "OUTPUTS",
    "CACHE_OUTPUTS",
    "STEP_INPUTS",
    "STEP_OUTPUTS",
    "STEP_FIELDS",
    "is_incremental",
    "outputs_of",
    "REQUIRED_FIELDS",
    "sha256_file",
    "validate_manifest",
    "verify_files",
    "load_items",
    "read_manifest",
    "validation_ndcg",
]

PAD, OOV = 0, 1
#: Size of the time-gap vocabulary including PAD: 0 = unknown, 1 = gap < 1 s, ... 31 = ~2^30 s+.
N_GAP_BUCKETS = 32

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
ITEMS_FILE = "items.json"
STEP_FILE = "step.onnx"


def gap_boundaries_ms(n_buckets: int = N_GAP_BUCKETS) -> list[int]:
    """The gap (ms) at which each bucket above 1 starts: ``bucket(g) = 1 + #boundaries <= g``,
    i.e. ``1 + min(floor(log2(1 + gap_s)), n_buckets - 2)``."""
    return [(2**k - 1) * 1000 for k in range(1, n_buckets - 1)]


#: The ONNX graph contract the worker codes against: name -> (dtype, symbolic shape).
INPUTS: list[dict[str, Any]] = [
    {"name": "items", "dtype": "int64", "shape": ["B", "L"]},
    {"name": "types", "dtype": "int64", "shape": ["B", "L"]},
    {"name": "gaps", "dtype": "int64", "shape": ["B", "L"]},
    {"name": "exclude", "dtype": "int64", "shape": ["B", "E"]},
]
OUTPUTS: list[dict[str, Any]] = [
    {"name": "top_items", "dtype": "int64", "shape": ["B", "K"]},
    {"name": "top_scores", "dtype": "float32", "shape": ["B", "K"]},
    {"name": "attn", "dtype": "float32", "shape": ["B", "L"]},
]

#: The full graph of an incremental model also returns the cache the step graph continues from.
CACHE_OUTPUTS: list[dict[str, Any]] = [
    {"name": "cache", "dtype": "float32", "shape": ["B", "blocks", 2, "slots", "d"]},
    {"name": "cache_len", "dtype": "int64", "shape": ["B"]},
]
#: The step graph: one new event per row, the cache of the events before it (oldest first,
#: left-padded; ``cache_len`` of its slots are events) and the exclusion list.
STEP_INPUTS: list[dict[str, Any]] = [
    {"name": "items", "dtype": "int64", "shape": ["B", 1]},
    {"name": "types", "dtype": "int64", "shape": ["B", 1]},
    {"name": "gaps", "dtype": "int64", "shape": ["B", 1]},
    {"name": "cache", "dtype": "float32", "shape": ["B", "blocks", 2, "slots", "d"]},
    {"name": "cache_len", "dtype": "int64", "shape": ["B"]},
    {"name": "exclude", "dtype": "int64", "shape": ["B", "E"]},
]
STEP_OUTPUTS: list[dict[str, Any]] = [
    {"name": "top_items", "dtype": "int64", "shape": ["B", "K"]},
    {"name": "top_scores", "dtype": "float32", "shape": ["B", "K"]},
    {"name": "attn", "dtype": "float32", "shape": ["B", "W"]},
    {"name": "new_kv", "dtype": "float32", "shape": ["B", "blocks", 2, "d"]},
]
#: Fields an incremental model's manifest has besides :data:`REQUIRED_FIELDS`.
STEP_FIELDS: tuple[str, ...] = ("history_len", "step_file", "step_sha256", "step_inputs", "step_outputs",
                                "cache", "golden_step")

REQUIRED_FIELDS: tuple[str, ...] = (
    "version",
    "created_at",
    "model_file",
    "model_sha256",
    "inputs",
    "outputs",
    "max_len",
    "top_k",
    "pad_index",
    "oov_index",
    "n_items",
    "items_file",
    "items_sha256",
    "uses_types",
    "uses_gaps",
    "event_types",
    "popularity",
    "golden",
)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_incremental(manifest: dict[str, Any]) -> bool:
    """True for a model with a step graph and a key/value cache (``positions: "relative"``)."""
    return manifest.get("positions") == "relative"


def outputs_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The full graph's outputs: :data:`OUTPUTS`, plus the cache for an incremental model."""
    return OUTPUTS + CACHE_OUTPUTS if is_incremental(manifest) else OUTPUTS


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Raise :class:`ModelCheckError` naming the first missing or malformed field."""
    if not isinstance(manifest, dict):
        raise ModelCheckError(f"manifest is a {type(manifest).__name__}, not an object")
    missing = [f for f in REQUIRED_FIELDS if f not in manifest]
    if missing:
        raise ModelCheckError(f"manifest lacks field(s) {', '.join(missing)}")
    for key in ("max_len", "top_k", "n_items"):
        if not isinstance(manifest[key], int) or manifest[key] < 1:
            raise ModelCheckError(f"manifest {key}={manifest[key]!r} is not a positive integer")
    if manifest["pad_index"] != 0 or manifest["oov_index"] != 1:
        raise ModelCheckError("manifest pad_index/oov_index must be 0/1")
    _check_contract(manifest, "inputs", "outputs", INPUTS, outputs_of(manifest))
    golden = manifest["golden"]
    for key in ("items", "types", "gaps", "exclude", "top_items", "top_scores"):
        if key not in golden:
            raise ModelCheckError(f"manifest golden block lacks {key!r}")
    if not is_incremental(manifest):
        return
    missing = [f for f in STEP_FIELDS if f not in manifest]
    if missing:
        raise ModelCheckError(f"manifest of an incremental model lacks field(s) {', '.join(missing)}")
    _check_contract(manifest, "step_inputs", "step_outputs", STEP_INPUTS, STEP_OUTPUTS)
    cache = manifest["cache"]
    if not isinstance(cache, dict) or cache.get("slots") != manifest["max_len"] - 1:
        raise ModelCheckError(f"manifest cache {cache!r} must have slots = max_len - 1 = {manifest['max_len'] - 1}")
    for key in ("items", "types", "gaps", "exclude", "top_items", "top_scores"):
        if key not in manifest["golden_step"]:
            raise ModelCheckError(f"manifest golden_step block lacks {key!r}")


def _check_contract(manifest: dict[str, Any], ins: str, outs: str, want_in: list[dict[str, Any]],
                    want_out: list[dict[str, Any]]) -> None:
    names_in = [i.get("name") for i in manifest[ins]]
    names_out = [o.get("name") for o in manifest[outs]]
    if names_in != [i["name"] for i in want_in] or names_out != [o["name"] for o in want_out]:
        raise ModelCheckError(f"manifest {ins}={names_in} {outs}={names_out}, expected "
                              f"{[i['name'] for i in want_in]} -> {[o['name'] for o in want_out]}")


def verify_files(version_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Check that model.onnx and items.json exist and match the manifest's sha256.

    Raises :class:`ModelCheckError` naming the file and both digests.
    """
    vdir = Path(version_dir)
    files = [(manifest.get("model_file", MODEL_FILE), manifest.get("model_sha256")),
             (manifest.get("items_file", ITEMS_FILE), manifest.get("items_sha256"))]
    if is_incremental(manifest):
        files.append((manifest.get("step_file", STEP_FILE), manifest.get("step_sha256")))
    if manifest.get("attributes_file"):
        files.append((manifest["attributes_file"], manifest.get("attributes_sha256")))
    for fname, expected in files:
        path = vdir / fname
        if not path.is_file():
            raise ModelCheckError(f"{path} is missing")
        got = sha256_file(path)
        if got != expected:
            raise ModelCheckError(f"sha256 mismatch for {path}: manifest says {expected}, file is {got}")


def load_items(version_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> list[str]:
    """The item vocabulary: ``items[i]`` is the item id of model index ``i + 2``.

    Verifies the sidecar's sha256 and that it covers ``n_items - 2`` items.
    """
    path = Path(version_dir) / manifest.get("items_file", ITEMS_FILE)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelCheckError(f"cannot read item vocabulary {path}: {exc}") from None
    got = hashlib.sha256(raw).hexdigest()
    if got != manifest.get("items_sha256"):
        raise ModelCheckError(f"sha256 mismatch for {path}: manifest says {manifest.get('items_sha256')}, file is {got}")
    items = json.loads(raw)
    if not isinstance(items, list) or len(items) != manifest["n_items"] - 2:
        raise ModelCheckError(f"{path} has {len(items) if isinstance(items, list) else '?'} items, "
                              f"manifest n_items={manifest['n_items']} implies {manifest['n_items'] - 2}")
    return [str(i) for i in items]


def validation_ndcg(metrics: dict[str, Any]) -> float | None:
    """Validation NDCG@10 from a metrics block, whichever of the known layouts it uses."""
    if not isinstance(metrics, dict):
        return None
    for key in ("validation", "valid", "val"):
        block = metrics.get(key)
        if isinstance(block, dict):
            inner = block.get("metrics", block)
            if isinstance(inner, dict) and isinstance(inner.get("ndcg@10"), (int, float)):
                return float(inner["ndcg@10"])
    value = metrics.get("ndcg@10")
    return float(value) if isinstance(value, (int, float)) else None


def read_manifest(version_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a version directory; ModelCheckError when unreadable."""
    path = Path(version_dir) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelCheckError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelCheckError(f"{path} holds a {type(manifest).__name__}, not an object")
    return manifest
