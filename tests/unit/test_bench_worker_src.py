"""``attnrec bench --worker-src DIR`` runs the worker of another source tree: the module it runs
must match how that tree names its packages."""

from pathlib import Path

from attnrec.apps.bench.worker import _worker_module

REPO = Path(__file__).resolve().parents[2]


def _tree(tmp_path: Path, main: str | None, pyproject: str = "") -> Path:
    if main is not None:
        (tmp_path / "apps").mkdir()
        (tmp_path / "apps" / "__main__.py").write_text(main)
    if pyproject:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    return tmp_path


def test_this_checkout_runs_under_its_installed_name() -> None:
    # relative imports in apps/__main__.py: run as "apps" they fail ("beyond top-level package")
    assert _worker_module(REPO) == "attnrec.apps"


def test_a_tree_with_relative_imports_and_one_installed_name(tmp_path: Path) -> None:
    tree = _tree(tmp_path, "from .cli import main\n", '[tool.setuptools]\npackage-dir = { "attnrec.apps" = "apps" }\n')
    assert _worker_module(tree) == "attnrec.apps"


def test_older_trees(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    assert _worker_module(_tree(tmp_path / "a", None)) == "attnrec"  # before the apps layer
    assert _worker_module(_tree(tmp_path / "b", "from apps.cli import main\n")) == "apps"
    assert _worker_module(_tree(tmp_path / "c", "from attnrec.apps.cli import main\n")) == "attnrec.apps"
