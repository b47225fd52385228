"""The served model: load a registry version into onnxruntime, check it, score batches.

Loading happens off the hot path (a background thread); a model is only handed to the agent
after every check passed: sha256 of the file, the input/output contract, and the manifest's
golden input giving finite scores and the expected top-K. The agent swaps models between
batches, so a batch is always scored by exactly one version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from attnrec.errors import ModelCheckError, RegistryError

__all__ = ["LoadedModel", "load_model", "ModelWatcher", "read_current", "PAD", "OOV"]

log = logging.getLogger(__name__)

PAD, OOV = 0, 1
#: Gap-bucket boundaries of the "log2s" encoding (training/features.py): bucket =
#: 1 + #boundaries <= gap, i.e. 1 + min(floor(log2(1 + gap_s)), 30). Used when a manifest
#: does not carry ``gap_boundaries_ms`` itself.
LOG2S_BOUNDARIES_MS = [(2**k - 1) * 1000 for k in range(1, 31)]


@dataclass
class LoadedModel:
    """A checked onnxruntime session plus what the worker needs from the manifest."""

    version: str
    manifest: dict[str, Any]
    session: ort.InferenceSession
    item_ids: list[str]  # index -> item_id (indices 0 and 1 are PAD and OOV)
    item_index: dict[bytes, int]  # UTF-8 item id, as stored in the Redis buffers -> index
    event_type_index: dict[bytes, int]  # UTF-8 event type -> index (0 = PAD)
    gap_boundaries_ms: np.ndarray
    max_len: int
    top_k: int
    uses_types: bool
    uses_gaps: bool
    popularity: list[str]
    loaded_at: float = field(default_factory=time.time)
    #: stream.logic.EntryTable memo of parsed buffer entries; its indices belong to this version
    entry_table: Any = field(default=None, repr=False, compare=False)

    def run(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score a batch: arrays (B, L) int64 and (B, E) int64 -> top_items, top_scores, attn."""
        out = self.session.run(
            ["top_items", "top_scores", "attn"],
            {"items": items, "types": types, "gaps": gaps, "exclude": exclude},
        )
        return out[0], out[1], out[2]


def load_model(vdir: Path, *, threads: int = 1) -> LoadedModel:
    """Load one registry version and run every load-time check (``exporter.check``: manifest
    fields, sha256, contract, golden input). Raises :class:`ModelCheckError`."""
    from exporter.check import load_checked

    checked = load_checked(Path(vdir), intra_op_threads=threads)
    manifest = checked.manifest
    item_ids = ["<pad>", "<oov>"] + [str(i) for i in checked.items]
    event_types = list(manifest.get("event_types") or [])
    return LoadedModel(
        version=checked.version,
        manifest=manifest,
        session=checked.session,
        item_ids=item_ids,
        item_index={it.encode(): i for i, it in enumerate(item_ids) if i >= 2},
        event_type_index={t.encode(): i + 1 for i, t in enumerate(event_types)},
        gap_boundaries_ms=np.asarray(manifest.get("gap_boundaries_ms") or LOG2S_BOUNDARIES_MS, dtype=np.int64),
        max_len=int(manifest.get("max_len", 50)),
        top_k=int(manifest.get("top_k", 10)),
        uses_types=bool(manifest.get("uses_types", False)),
        uses_gaps=bool(manifest.get("uses_gaps", False)),
        popularity=[str(p) for p in manifest.get("popularity") or []],
    )


def read_current(registry: Path) -> str | None:
    """The promoted version's name, or None when nothing is promoted yet."""
    try:
        v = (Path(registry) / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return None
    return v or None


class ModelWatcher:
    """Polls the registry's ``CURRENT`` in a background thread and prepares new models.

    The agent calls :meth:`take_pending` between batches; it returns a checked model at most
    once per promotion. A version that fails its checks is remembered and not retried until
    ``CURRENT`` changes again; the failure goes to the log and the ``on_event`` callback.
    """

    def __init__(
        self,
        registry: Path,
        *,
        threads: int = 1,
        poll_s: float = 1.0,
        on_event: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.registry = Path(registry)
        self.threads = threads
        self.poll_s = poll_s
        self.on_event = on_event or (lambda kind, version, why: None)
        self._pending: LoadedModel | None = None
        self._lock = threading.Lock()
        self._seen: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def load_now(self) -> LoadedModel | None:
        """Synchronously load CURRENT (used at start-up). None when nothing is promoted."""
        v = read_current(self.registry)
        self._seen = v
        if v is None:
            return None
        try:
            m = load_model(self.registry / v, threads=self.threads)
        except ModelCheckError as exc:
            self.last_error = str(exc)
            log.error("model %s rejected at start-up: %s", v, exc)
            self.on_event("failure", v, str(exc))
            return None
        self.on_event("success", v, "")
        return m

    def poll_once(self) -> None:
        try:
            v = read_current(self.registry)
        except OSError as exc:
            log.warning("cannot read %s/CURRENT: %s", self.registry, exc)
            return
        if v is None or v == self._seen:
            return
        self._seen = v
        t0 = time.monotonic()
        try:
            m = load_model(self.registry / v, threads=self.threads)
        except (ModelCheckError, RegistryError) as exc:
            self.last_error = str(exc)
            log.error("new model %s rejected, keeping the current one: %s", v, exc)
            self.on_event("failure", v, str(exc))
            return
        with self._lock:
            self._pending = m
        log.info("model %s loaded and checked in %.0f ms; swapping at the next batch", v, 1000 * (time.monotonic() - t0))
        self.on_event("success", v, "")

    def take_pending(self) -> LoadedModel | None:
        with self._lock:
            m, self._pending = self._pending, None
        return m

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll_once()
            except Exception:  # never let the watcher thread die
                log.exception("model watcher failed; retrying")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
