"""The served model: load a registry version into onnxruntime, check it, score batches.

Loading happens off the hot path (a background thread); a model is only handed to the agent
after every check passed: sha256 of the file, the input/output contract, and the manifest's
golden input giving finite scores and the expected top-K. The agent swaps models between
batches, so a batch is always scored by exactly one version: at the next batch, or within
``RELOAD_POLL_S`` when no event comes (the batcher's idle tick).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from attnrec.errors import ModelCheckError, RegistryError
from attnrec.manifest import gap_boundaries_ms
from attnrec.modelcheck import load_checked
from attnrec.registry import Registry

__all__ = ["LoadedModel", "Session", "SessionFactory", "load_model", "ModelWatcher"]

log = logging.getLogger(__name__)


class Session(Protocol):
    """What the worker needs of a scoring session: ``onnxruntime.InferenceSession.run``."""

    def run(self, output_names: Any, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


#: Replaces a checked model's onnxruntime sessions (full graph, step graph or None) by another
#: scorer of the same contract (``ATTNREC_SCORER``; the apps layer supplies the torch-eager one
#: for the benchmark).
SessionFactory = Callable[["LoadedModel"], "tuple[Session, Session | None]"]


@dataclass
class LoadedModel:
    """A checked onnxruntime session plus what the worker needs from the manifest."""

    version: str
    manifest: dict[str, Any]
    session: Session
    item_ids: list[str]  # index -> item_id (indices 0 and 1 are PAD and OOV)
    item_index: dict[bytes, int]  # UTF-8 item id, as stored in the Redis buffers -> index
    event_type_index: dict[bytes, int]  # UTF-8 event type -> index (0 = PAD)
    gap_boundaries_ms: np.ndarray
    max_len: int
    top_k: int
    uses_types: bool
    uses_gaps: bool
    popularity: list[str]
    step_session: Session | None = None  # incremental models: the step graph
    history_len: int = 0  # events the full graph reads (incremental: n_blocks*(L-1)+1; else max_len)
    cache_shape: tuple[int, int, int, int] = (0, 0, 0, 0)  # incremental: (blocks, 2, L-1, d) per user
    loaded_at: float = field(default_factory=time.time)
    path: Path | None = None  # the registry version directory it was loaded from
    #: stream.logic.EntryTable memo of parsed buffer entries; its indices belong to this version
    entry_table: Any = field(default=None, repr=False, compare=False)

    @property
    def incremental(self) -> bool:
        """True when new events are scored from a per-user key/value cache (the step graph)."""
        return self.step_session is not None

    def run(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, ...]:
        """The full graph: arrays (B, T) int64 and (B, E) int64 -> top_items, top_scores, attn,
        and for an incremental model the cache (B, blocks, 2, L-1, d) and cache_len (B,)."""
        names = ["top_items", "top_scores", "attn"] + (["cache", "cache_len"] if self.incremental else [])
        return tuple(self.session.run(names, {"items": items, "types": types, "gaps": gaps, "exclude": exclude}))

    def run_step(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray, cache: np.ndarray,
                 cache_len: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, ...]:
        """The step graph: one new event per row (B, 1) over the cache -> top_items, top_scores,
        attn (B, L) and new_kv (B, blocks, 2, d)."""
        assert self.step_session is not None, f"model {self.version} has no step graph"
        return tuple(self.step_session.run(None, {"items": items, "types": types, "gaps": gaps, "cache": cache,
                                                  "cache_len": cache_len, "exclude": exclude}))


def load_model(vdir: Path, *, threads: int = 1, session_factory: SessionFactory | None = None) -> LoadedModel:
    """Load one registry version and run every load-time check (``attnrec.modelcheck``: manifest
    fields, sha256, contract, golden input). Raises :class:`ModelCheckError`. With
    ``session_factory`` the checked onnxruntime session is then replaced by its scorer."""
    checked = load_checked(Path(vdir), intra_op_threads=threads)
    manifest = checked.manifest
    item_ids = ["<pad>", "<oov>"] + [str(i) for i in checked.items]
    event_types = list(manifest.get("event_types") or [])
    model = LoadedModel(
        version=checked.version,
        manifest=manifest,
        session=checked.session,
        item_ids=item_ids,
        item_index={it.encode(): i for i, it in enumerate(item_ids) if i >= 2},
        event_type_index={t.encode(): i + 1 for i, t in enumerate(event_types)},
        gap_boundaries_ms=np.asarray(manifest.get("gap_boundaries_ms") or gap_boundaries_ms(), dtype=np.int64),
        max_len=int(manifest.get("max_len", 50)),
        top_k=int(manifest.get("top_k", 10)),
        uses_types=bool(manifest.get("uses_types", False)),
        uses_gaps=bool(manifest.get("uses_gaps", False)),
        popularity=[str(p) for p in manifest.get("popularity") or []],
        step_session=checked.step_session,
        history_len=int(manifest.get("history_len") or manifest.get("max_len", 50)),
        path=Path(vdir),
    )
    if model.incremental:
        c = manifest["cache"]
        model.cache_shape = (int(c["blocks"]), 2, int(c["slots"]), int(c["d_model"]))
    if session_factory is not None:
        model.session, model.step_session = session_factory(model)
    return model


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
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.registry = Registry(registry)
        self.session_factory = session_factory
        self.threads = threads
        self.poll_s = poll_s
        self.on_event = on_event or (lambda kind, version, why: None)
        self._pending: LoadedModel | None = None
        self._shadow_seen: str | None = None
        self._pending_shadow: tuple[LoadedModel | None] | None = None  # (model or None = stop), when changed
        self._lock = threading.Lock()
        self._seen: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def load_now(self) -> LoadedModel | None:
        """Synchronously load CURRENT, and a SHADOW version if any (used at start-up). None when
        nothing is promoted."""
        self.poll_shadow()
        v = self.registry.current_version()
        self._seen = v
        if v is None:
            return None
        try:
            m = self._load(v)
        except ModelCheckError as exc:
            self.last_error = str(exc)
            log.error("model %s rejected at start-up: %s", v, exc)
            self.on_event("failure", v, str(exc))
            return None
        self.on_event("success", v, "")
        return m

    def poll_shadow(self) -> None:
        """Load a new ``SHADOW`` version (or note that shadowing stopped) for
        :meth:`take_pending_shadow`; a version failing its checks is logged and not shadowed."""
        try:
            v = self.registry.shadow_version()
        except OSError as exc:
            log.warning("cannot read %s/SHADOW: %s", self.registry.root, exc)
            return
        if v == self._shadow_seen:
            return
        self._shadow_seen = v
        m = None
        if v is not None:
            try:
                m = self._load(v)
            except (ModelCheckError, RegistryError) as exc:
                log.error("shadow version %s rejected: %s", v, exc)
                self.on_event("failure", v, str(exc))
                return
            log.info("shadow version %s loaded and checked", v)
        with self._lock:
            self._pending_shadow = (m,)

    def take_pending_shadow(self) -> tuple[LoadedModel | None] | None:
        """``(model,)`` when the shadow version changed (``(None,)``: shadowing stopped), else None."""
        with self._lock:
            m, self._pending_shadow = self._pending_shadow, None
        return m

    def poll_once(self) -> None:
        self.poll_shadow()
        try:
            v = self.registry.current_version()
        except OSError as exc:
            log.warning("cannot read %s/CURRENT: %s", self.registry.root, exc)
            return
        if v is None or v == self._seen:
            return
        self._seen = v
        t0 = time.monotonic()
        try:
            m = self._load(v)
        except (ModelCheckError, RegistryError) as exc:
            self.last_error = str(exc)
            log.error("new model %s rejected, keeping the current one: %s", v, exc)
            self.on_event("failure", v, str(exc))
            return
        with self._lock:
            self._pending = m
        log.info("model %s loaded and checked in %.0f ms; swapping between batches", v, 1000 * (time.monotonic() - t0))
        self.on_event("success", v, "")

    def _load(self, version: str) -> LoadedModel:
        return load_model(self.registry.root / version, threads=self.threads, session_factory=self.session_factory)

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
