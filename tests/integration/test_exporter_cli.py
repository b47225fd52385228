"""`attnrec export` / `attnrec models` as the console entry point runs them (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from attnrec.exporter.testing import write_random_checkpoint

from attnrec.modelcheck import load_checked
from attnrec.registry import Registry

REPO = Path(__file__).resolve().parents[2]


def attnrec(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "attnrec.apps", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_export_promote_serve_rollback_through_the_console(tmp_path: Path) -> None:
    a = write_random_checkpoint(tmp_path / "a", n_items=300, max_len=30, d_model=32, ndcg=0.05, seed=1)
    b = write_random_checkpoint(tmp_path / "b", n_items=300, max_len=30, d_model=32, ndcg=0.06, seed=2)
    env = {**os.environ, "ATTNREC_REGISTRY": str(tmp_path / "registry"), "ATTNREC_TOP_K": "7"}
    r = attnrec("export", "--checkpoint", str(a), "--promote", env=env)
    assert r.returncode == 0, r.stderr
    assert "published" in r.stdout and "promotion: promoted" in r.stdout
    r = attnrec("export", "--checkpoint", str(b), "--promote", "--margin", "0.0", env=env)
    assert r.returncode == 0, r.stderr
    reg = Registry(tmp_path / "registry")
    va, vb = reg.versions()[1]["version"], reg.versions()[0]["version"]
    assert reg.current_version() == vb

    # what the worker will do on hot reload: load, check, serve; K comes from the manifest
    model = load_checked(reg.version_dir(vb))
    items = np.array([[0, 0, 5, 9, 9, 1]], dtype=np.int64)
    top_items, top_scores, attn = model.session.run(
        None, {"items": items, "types": np.ones_like(items), "gaps": np.ones_like(items), "exclude": items})
    assert top_items.shape == (1, 7) and not {0, 1, 5, 9} & set(top_items[0].tolist())
    assert [model.items[i - 2] for i in top_items[0]][0].startswith("item-")

    r = attnrec("models", "rollback", env=env)
    assert r.returncode == 0 and reg.current_version() == va, r.stderr
    r = attnrec("models", "list", "--json", env=env)
    listed = json.loads(r.stdout)
    assert listed["current"] == va and [h["decision"] for h in listed["history"]] == ["promoted", "promoted", "rollback"]
    r = attnrec("models", "promote", "nope", env=env)
    assert r.returncode == 2 and "is not in the registry" in r.stderr
