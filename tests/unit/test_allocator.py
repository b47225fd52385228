"""Training under jemalloc (training/allocator.py): when a command restarts itself, with what
environment, and that a training command started from the shell really does (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from attnrec.training.allocator import JEMALLOC_CONF, allocator_env, find_jemalloc
from attnrec.training.sim.synth import generate

from attnrec.errors import ConfigError

LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def test_auto_and_jemalloc_restart_with_the_library_preloaded_and_freed_pages_kept() -> None:
    for choice in ("auto", "jemalloc"):
        env = allocator_env(choice, {"PATH": "/bin"}, LIB)
        assert env == {"PATH": "/bin", "LD_PRELOAD": LIB, "MALLOC_CONF": JEMALLOC_CONF}
    # a user's own preload and MALLOC_CONF are kept
    env = allocator_env("auto", {"LD_PRELOAD": "/x/libfoo.so", "MALLOC_CONF": "narenas:2"}, LIB)
    assert env == {"LD_PRELOAD": f"{LIB} /x/libfoo.so", "MALLOC_CONF": "narenas:2"}


def test_no_restart_under_system_when_already_preloaded_or_without_the_library() -> None:
    assert allocator_env("system", {}, LIB) is None
    assert allocator_env("auto", {"LD_PRELOAD": LIB}, LIB) is None  # the restarted process itself
    assert allocator_env("auto", {}, None) is None
    with pytest.raises(ConfigError, match="ATTNREC_TRAIN_ALLOCATOR=jemalloc: no jemalloc library"):
        allocator_env("jemalloc", {}, None)


def test_find_jemalloc_takes_the_first_existing_path(tmp_path: Path) -> None:
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    assert find_jemalloc((str(tmp_path / "absent.so"), str(lib))) == str(lib)
    assert find_jemalloc((str(tmp_path / "absent.so"),)) is None


def test_attnrec_train_from_the_shell_restarts_once_under_jemalloc_and_trains(tmp_path: Path) -> None:
    """The project's setup installs libjemalloc2, so the library is there; the command restarts
    itself once, the restarted process knows it runs under jemalloc, and the training completes."""
    assert find_jemalloc() is not None, "libjemalloc2 is missing: run deploy/setup-system.sh"
    data = tmp_path / "clicks"
    data.mkdir()
    (data / "part-0.jsonl").write_bytes(b"".join(e.to_json() + b"\n" for e in generate(40, 30, 800, seed=3)))
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    env["ATTNREC_TRAIN_ALLOCATOR"] = "jemalloc"
    out = tmp_path / "ckpt"
    proc = subprocess.run(
        [sys.executable, "-m", "attnrec.apps.cli", "--log-level", "debug", "train", "--data", str(data), "--format",
         "events", "--out", str(out), "--epochs", "1", "--max-len", "10", "--quiet", "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("restarting under") == 1 and proc.stderr.count("running under") == 1, proc.stderr[-3000:]
    assert (out / "metrics.json").is_file()
    # a bad value is a one-line error naming the setting, not a traceback
    env["ATTNREC_TRAIN_ALLOCATOR"] = "tcmalloc"
    bad = subprocess.run([sys.executable, "-m", "attnrec.apps.cli", "train", "--data", str(data), "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "ATTNREC_TRAIN_ALLOCATOR" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
