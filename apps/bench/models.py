"""The models the bench serves: cached random-weight models of a given shape, or the registry's
promoted model.

Speed does not depend on the weights, so the sweep's shapes (catalogue size x ``max_len``) are
random-weight AttnRec checkpoints exported through the normal exporter path (parity gate,
registry, load checks). Building one trains nothing but still exports, checks and publishes a
model, so each shape is built once per cache directory (``HOME/bench/models``) and reused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from attnrec.errors import ConfigError

__all__ = ["ensure_model", "registry_model", "shadow_registry"]

log = logging.getLogger(__name__)


def ensure_model(cache: Path, n_items: int, max_len: int, *, d_model: int = 64, n_blocks: int = 2,
                 positions: str = "relative") -> tuple[Path, list[str]]:  # fmt: skip
    """A registry holding a promoted random-weight model of this shape (built once, cached), and
    the model's item ids. ``positions``: "relative" (incremental: full and step graphs, the
    product's default) or "absolute" (a window model, recomputed whole per event)."""
    from attnrec.registry import Registry

    tag = "" if positions == "absolute" else "-rel"
    root = (cache / "models" / f"n{n_items}-L{max_len}-d{d_model}-b{n_blocks}{tag}").resolve()
    reg = root / "registry"
    if Registry(reg).current_version() is None:
        from ...exporter.export import export_checkpoint
        from ...exporter.testing import write_random_checkpoint

        t0 = time.monotonic()
        log.info("building a random-weight model: %d items, max_len %d (cached in %s)", n_items, max_len, root)
        ckpt = write_random_checkpoint(root / "ckpt", n_items=n_items + 2, max_len=max_len, d_model=d_model,
                                       n_blocks=n_blocks, n_samples=16, positions=positions)  # fmt: skip
        export_checkpoint(ckpt, reg, promote=True, force=True)
        log.info("model ready in %.0fs", time.monotonic() - t0)
    if Registry(reg).current_version() is None:
        raise ConfigError(f"no promoted version in {reg}")
    vocab = json.loads((root / "ckpt" / "vocab.json").read_text())["items"]
    return reg, [str(x) for x in vocab]


def registry_model(registry: Path) -> tuple[Path, list[str], int, int]:
    """The promoted model of a registry: ``(registry, item ids, catalogue items, max_len)``."""
    from attnrec.manifest import load_items, read_manifest
    from attnrec.registry import Registry

    reg = Registry(registry)
    v = reg.current_version()
    if v is None:
        raise ConfigError(f"no promoted model in {registry}")
    vdir = reg.version_dir(v)
    man = read_manifest(vdir)
    return registry, load_items(vdir, man), int(man["n_items"]) - 2, int(man["max_len"])


def shadow_registry(registry: Path) -> Path:
    """A copy of ``registry`` whose promoted model is shadow-scored by a second version of the
    same shape (its weights copied: the cost of scoring does not depend on them); built once,
    beside ``registry``."""
    import shutil

    from attnrec.registry import Registry

    root = registry.parent / "registry-shadow"
    if Registry(root).shadow_version() is None:
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(registry, root)
        reg = Registry(root)
        cur = reg.current_version()
        if cur is None:
            raise ConfigError(f"no promoted version in {registry}")
        vdir = reg.version_dir(cur)
        manifest = {k: v for k, v in reg.read_manifest(cur).items() if k not in ("version", "created_at", "model_sha256")}
        from attnrec.manifest import load_items

        step = vdir / "step.onnx"
        copy = reg.publish(vdir / "model.onnx", manifest, check=False, items=load_items(vdir, reg.read_manifest(cur)),
                           step_onnx_path=step if step.is_file() else None)
        reg.set_shadow(str(copy), reason="benchmark: the cost of shadow scoring")
    return root
