"""The distribution installs under one name: a built wheel, installed in a fresh virtualenv,
puts ``attnrec`` (and its dist-info) into site-packages and nothing else, ``attnrec --help``
runs, and the worker's modules import without torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("attnrec", "stream", "training", "exporter", "apps")


def _packages_in_repo() -> set[str]:
    """Every folder with an ``__init__.py`` under the product folders, by its installed name."""
    out = set()
    for folder in FOLDERS:
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            out.add(".".join(("attnrec",) + (() if folder == "attnrec" else (folder,)) + rel))
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the files git knows (as a fresh clone would be), so the build leaves
    nothing behind in the checkout."""
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")
    files = subprocess.check_output(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                    text=True).split()
    for f in files:
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("attnrec-*.whl")
    return whl


def test_the_wheel_holds_one_top_level_name_and_every_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"attnrec"}, f"top-level names installed: {sorted(top)}"
    packages = {n.rpartition("/")[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    missing = _packages_in_repo() - packages
    assert not missing, f"packages of the repository missing from the wheel (pyproject's packages list): {missing}"
    for needed in ("attnrec/schemas/recs.v1.json", "attnrec/apps/dashboard/static/dashboard/index.html"):
        assert needed in names, f"{needed} is not in the wheel (package-data)"


def test_the_wheel_installs_and_runs_in_a_fresh_virtualenv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    # the dependencies come from this environment's site-packages (read as a plain path: the
    # editable install's finder there is not loaded), so the test needs no network
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    top = sorted(p.name for p in site.iterdir() if "attnrec" in p.name.lower())
    assert [t for t in top if not t.endswith(".dist-info")] == ["attnrec"], f"installed: {top}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTNREC_", "PYTHONPATH"))}
    run = subprocess.run([str(venv / "bin" / "attnrec"), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "worker" in run.stdout and "train" in run.stdout
    probe = ("import sys, attnrec, attnrec.stream.app, attnrec.apps.cli\n"
             "assert 'torch' not in sys.modules, 'the worker imported torch'\n"
             "print(attnrec.stream.app.__file__)")
    run = subprocess.run([str(py), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(str(site / "attnrec" / "stream")), run.stdout
