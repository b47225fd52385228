"""The model registry: a directory of published versions and a ``CURRENT`` pointer.

Torch-free and onnx-free on purpose: the online worker imports this module. Layout::

    <root>/
      CURRENT                 the promoted version's name + newline; replaced with os.replace
      SHADOW                  the version workers shadow-score (attnrec models shadow); absent: none
      HISTORY.jsonl           one JSON line per promotion decision (promoted, forced,
                              rejected, rollback, shadow, shadow-off): ts, version, previous,
                              decision, reason, figures
      .lock                   flock(2) serialising promote/rollback between processes
      <version>/model.onnx
      <version>/manifest.json
      <version>/items.json    the item vocabulary (index -> item_id), see below
      <version>/item_attributes.csv|.jsonl   a model with item content: its attribute file
                              (``attributes_file`` / ``attributes_sha256`` in the manifest)

Item vocabulary: always a sidecar ``items.json`` (a JSON list; entry ``i`` is the item id of
model index ``i + 2``; PAD = 0 and OOV = 1 have no id). The manifest names it in
``items_file`` with its ``items_sha256`` and ``n_items`` (the model's vocabulary size,
counting PAD and OOV). One form only, so every reader does the same thing: call
:func:`load_items`. Catalogues of 10^5-10^6 items would make an inline list the bulk of a
manifest that is read on every poll.

Version names are ``YYYYMMDDTHHMM-<first 6 hex of model sha256>`` (UTC); a same-minute
re-publication of an identical file gets ``-2``, ``-3``... appended.

What a version directory must hold is :mod:`attnrec.manifest`'s; this module owns the
directory of versions. Publishing copies files into ``<root>/.tmp-<random>/``, fsyncs them,
optionally runs the load-time checks of :mod:`attnrec.modelcheck` on that directory, and renames it into place, so a
reader never sees a half-written version. Promotion rewrites ``CURRENT`` through a temp file
and ``os.replace``; a reader sees the old or the new name, never a torn one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from attnrec.errors import RegistryError
from attnrec.manifest import (
    ITEMS_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    STEP_FILE,
    sha256_file,
    validate_manifest,
    validation_ndcg,
    verify_files,
)

__all__ = ["DEFAULT_ROOT", "CURRENT_FILE", "SHADOW_FILE", "HISTORY_FILE", "Registry", "fsync_dir"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path(".attnrec/registry")
CURRENT_FILE = "CURRENT"
SHADOW_FILE = "SHADOW"
HISTORY_FILE = "HISTORY.jsonl"
_LOCK_FILE = ".lock"

def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (a training curve's NaN loss) as None: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _dumps(obj: Any) -> bytes:
    return (json.dumps(_finite(obj), indent=2, sort_keys=False, allow_nan=False) + "\n").encode()


class Registry:
    """A model registry rooted at a directory (created on first write)."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # --- reading --------------------------------------------------------------------------------
    def _pointer(self, file: str) -> str | None:
        """The version a pointer file (CURRENT, SHADOW) names, or None."""
        try:
            name = (self.root / file).read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def current_version(self) -> str | None:
        """The promoted version, or None when nothing has been promoted yet."""
        return self._pointer(CURRENT_FILE)

    def version_dir(self, version: str) -> Path:
        """Directory of a published version; RegistryError if it does not exist."""
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"invalid version name {version!r}")
        vdir = self.root / version
        if not (vdir / MANIFEST_FILE).is_file():
            raise RegistryError(f"version {version!r} is not in the registry {self.root}")
        return vdir

    def read_manifest(self, version: str) -> dict[str, Any]:
        path = self.version_dir(version) / MANIFEST_FILE
        try:
            manifest: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from None
        return manifest

    def versions(self) -> list[dict[str, Any]]:
        """Summaries of every published version, newest first; ``current`` marks CURRENT."""
        if not self.root.is_dir():
            return []
        current = self.current_version()
        out = []
        for vdir in self.root.iterdir():
            if not vdir.is_dir() or vdir.name.startswith(".") or not (vdir / MANIFEST_FILE).is_file():
                continue
            try:
                m = json.loads((vdir / MANIFEST_FILE).read_text())
            except (OSError, ValueError):
                log.warning("skipping %s: unreadable manifest", vdir)
                continue
            metrics = m.get("metrics") or {}
            parity = m.get("parity") or {}
            out.append({
                "version": m.get("version", vdir.name),
                "created_at": m.get("created_at"),
                "current": vdir.name == current,
                "parent": m.get("parent"),
                "ndcg@10": validation_ndcg(metrics),
                "n_items": m.get("n_items"),
                "max_len": m.get("max_len"),
                "top_k": m.get("top_k"),
                "quantized": bool(m.get("quantization", {}).get("applied")),
                "parity_max_abs_diff": parity.get("max_abs_diff"),
                "parity_top10_agreement": parity.get("top10_agreement"),
            })
        out.sort(key=lambda s: (s["created_at"] or "", s["version"]), reverse=True)
        return out

    def history(self) -> list[dict[str, Any]]:
        """Every promotion decision, oldest first."""
        path = self.root / HISTORY_FILE
        if not path.is_file():
            return []
        out = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                log.warning("%s line %d is not JSON; skipped", path, n)
        return out

    # --- writing --------------------------------------------------------------------------------
    def publish(
        self,
        model_onnx_path: str | os.PathLike[str],
        manifest: dict[str, Any],
        *,
        items: Sequence[str] | None = None,
        check: bool = True,
        step_onnx_path: str | os.PathLike[str] | None = None,
        attributes_path: str | os.PathLike[str] | None = None,
    ) -> str:
        """Publish a model file with its manifest; returns the new version name.

        ``manifest`` is completed here with version, created_at, model_file, model_sha256 and
        (when ``items`` is given) items_file / items_sha256. When ``items`` is None the
        manifest must already describe an ``items.json`` next to the model file. With
        ``check`` (the default) the version is loaded with onnxruntime and its golden input
        run before the rename. An incremental model's step graph comes as ``step_onnx_path``
        (published as ``step.onnx``, with ``step_file`` / ``step_sha256`` in the manifest) (see :func:`attnrec.modelcheck.check_model`); a version that
        fails is deleted and the error re-raised.
        """
        src = Path(model_onnx_path)
        if not src.is_file():
            raise RegistryError(f"model file {src} does not exist")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            shutil.copyfile(src, tmp / MODEL_FILE)
            with open(tmp / MODEL_FILE, "rb+") as f:
                os.fsync(f.fileno())
            m = dict(manifest)
            if items is not None:
                data = json.dumps(list(items)).encode()
                _write_file(tmp / ITEMS_FILE, data)
                m["items_file"] = ITEMS_FILE
                m["items_sha256"] = hashlib.sha256(data).hexdigest()
            else:
                side = src.parent / m.get("items_file", ITEMS_FILE)
                if not side.is_file():
                    raise RegistryError(f"no items given and no {side} next to the model")
                shutil.copyfile(side, tmp / ITEMS_FILE)
                m["items_file"] = ITEMS_FILE
                m["items_sha256"] = sha256_file(tmp / ITEMS_FILE)
            m["model_file"] = MODEL_FILE
            m["model_sha256"] = sha256_file(tmp / MODEL_FILE)
            if step_onnx_path is not None:
                shutil.copyfile(step_onnx_path, tmp / STEP_FILE)
                with open(tmp / STEP_FILE, "rb+") as f:
                    os.fsync(f.fileno())
                m["step_file"] = STEP_FILE
                m["step_sha256"] = sha256_file(tmp / STEP_FILE)
            if attributes_path is not None:  # item content: the attribute file travels with the version
                name = "item_attributes" + (".csv" if Path(attributes_path).suffix.lower() == ".csv" else ".jsonl")
                shutil.copyfile(attributes_path, tmp / name)
                with open(tmp / name, "rb+") as f:
                    os.fsync(f.fileno())
                m["attributes_file"], m["attributes_sha256"] = name, sha256_file(tmp / name)
            now = _utcnow()
            m.setdefault("created_at", now.isoformat(timespec="seconds").replace("+00:00", "Z"))
            base = f"{now:%Y%m%dT%H%M}-{m['model_sha256'][:6]}"
            version = base
            n = 2
            while (self.root / version).exists():
                version = f"{base}-{n}"
                n += 1
            m["version"] = version
            validate_manifest(m)
            _write_file(tmp / MANIFEST_FILE, _dumps(m))
            if check:
                from attnrec.modelcheck import check_model  # onnxruntime is imported only to check

                check_model(tmp, m)
            fsync_dir(tmp)
            os.rename(tmp, self.root / version)
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("published %s (sha256 %s) in %s", version, m["model_sha256"][:12], self.root)
        return version

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / _LOCK_FILE, "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def shadow_version(self) -> str | None:
        """The version to shadow-score, or None."""
        return self._pointer(SHADOW_FILE)

    def set_shadow(self, version: str | None, *, reason: str = "") -> dict[str, Any] | None:
        """Start shadow scoring ``version`` (checked against its manifest first), or stop it
        (None); recorded in HISTORY.jsonl as ``shadow`` / ``shadow-off`` (nothing to stop: None)."""
        with self._locked():
            previous = self.shadow_version()
            if version is None:
                if previous is None:
                    return None
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.root / SHADOW_FILE)
                fsync_dir(self.root)
                return self.record(previous, decision="shadow-off", reason=reason or "stopped", previous=previous)
            manifest = self.read_manifest(version)
            validate_manifest(manifest)
            verify_files(self.version_dir(version), manifest)
            tmp = self.root / f".SHADOW.{uuid.uuid4().hex}"
            _write_file(tmp, (version + "\n").encode())
            os.replace(tmp, self.root / SHADOW_FILE)
            fsync_dir(self.root)
            return self.record(version, decision="shadow", reason=reason or "shadow scoring started",
                               previous=self.current_version())

    def _set_current(self, version: str) -> None:
        tmp = self.root / f".CURRENT.{uuid.uuid4().hex}"
        _write_file(tmp, (version + "\n").encode())
        os.replace(tmp, self.root / CURRENT_FILE)
        fsync_dir(self.root)

    def record(self, version: str, *, decision: str, reason: str, figures: dict[str, Any] | None = None,
               previous: str | None = None) -> dict[str, Any]:
        """Append one decision to HISTORY.jsonl (one write, O_APPEND) and return it."""
        entry = {
            "ts": _utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "version": version,
            "previous": previous,
            "decision": decision,
            "reason": reason,
            "figures": figures or {},
        }
        self.root.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry, allow_nan=False) + "\n").encode()
        fd = os.open(self.root / HISTORY_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def promote(self, version: str, *, reason: str, decision: str = "promoted",
                figures: dict[str, Any] | None = None, verify: bool = True) -> dict[str, Any]:
        """Make ``version`` CURRENT (atomic rename) and record it in HISTORY.jsonl.

        With ``verify`` the version's files are checked against its manifest first.
        Returns the history entry.
        """
        vdir = self.version_dir(version)
        if verify:
            manifest = self.read_manifest(version)
            validate_manifest(manifest)
            verify_files(vdir, manifest)
        with self._locked():
            previous = self.current_version()
            self._set_current(version)
            entry = self.record(version, decision=decision, reason=reason, figures=figures, previous=previous)
        log.info("CURRENT %s -> %s (%s: %s)", previous, version, decision, reason)
        return entry

    def rollback(self, *, reason: str = "manual rollback") -> str:
        """Make the version that was CURRENT before the current one was promoted CURRENT again.

        Repeated rollbacks walk further back (A -> B -> C, rollback -> B, rollback -> A).
        Returns the version now CURRENT; RegistryError when there is nothing to go back to.
        """
        with self._locked():
            current = self.current_version()
            if current is None:
                raise RegistryError(f"nothing to roll back: {self.root} has no CURRENT")
            target = None
            for entry in reversed(self.history()):
                if entry.get("version") == current and entry.get("decision") in ("promoted", "forced"):
                    target = entry.get("previous")
                    break
            if not target:
                raise RegistryError(f"nothing to roll back to: {current} has no earlier promoted version")
            vdir = self.version_dir(target)
            manifest = self.read_manifest(target)
            verify_files(vdir, manifest)
            self._set_current(target)
            self.record(target, decision="rollback", reason=reason, previous=current)
        log.warning("rolled back CURRENT %s -> %s (%s)", current, target, reason)
        return target
