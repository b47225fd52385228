"""The house's rules, checked on the code itself: layers only point down, no import cycles,
no product module over 400 lines without a reason written at its top, and every ``ATTNREC_*`` name in the code documented.

The layer order (also in docs/DESIGN.md, "Layout"), lowest first:

    attnrec          the base: errors, settings, events, manifest, registry, modelcheck, clients
    stream training  the online path and offline training; neither imports the other
    exporter         torch -> ONNX, parity, the promotion gate, the periodic trainer
    apps             the commands: cli, demo, replay, stack, bench; imported by nothing
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The repository's folders and the rooms they are, each installed as ``attnrec.<room>`` but
#: the base, which is ``attnrec`` itself (pyproject's package-dir).
FOLDERS = {"attnrec": "attnrec", "stream": "stream", "training": "training", "exporter": "exporter", "apps": "apps"}
PACKAGES = tuple(FOLDERS)
#: What each room may import besides itself (the base imports nothing of the project).
MAY_IMPORT: dict[str, set[str]] = {
    "attnrec": set(),
    "stream": {"attnrec"},
    "training": {"attnrec"},
    "exporter": {"attnrec", "training"},
    "apps": {"attnrec", "stream", "training", "exporter"},
}
MAX_LINES = 400
#: How a long module says why (see test_no_module_is_over_400_lines_without_a_reason).
LONG_REASON = re.compile(r"^\s*(#\s*)?Long: \S")


def room(module: str) -> str:
    """``attnrec.stream.x`` -> stream; ``attnrec.settings`` -> attnrec (the base)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS and parts[1] != "attnrec" else "attnrec"


def modules() -> dict[str, Path]:
    out = {}
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            prefix = ("attnrec",) if folder == "attnrec" else ("attnrec", folder)
            out[".".join(prefix + parts)] = path
    return out


def imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere (top level or inside functions)."""
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".") if is_pkg else module.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n and n != module:
                found.add(n)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, m, set(mods)) for m, p in mods.items()}


def test_layers_only_point_down(graph: dict[str, set[str]]) -> None:
    bad = [f"{m} imports {t}" for m, ts in graph.items() for t in ts
           if room(t) != room(m) and room(t) not in MAY_IMPORT[room(m)]]
    assert not bad, "imports that point up or sideways:\n" + "\n".join(sorted(bad))


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    """Tarjan's strongly connected components of the module graph: each must be one module.
    (A package and its own ``__init__`` re-exports do not count: ``__init__`` files import
    nothing of their package here.)"""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_is_over_400_lines_without_a_reason() -> None:
    """A module longer than :data:`MAX_LINES` says why at its top: a line ``Long: <why>`` within
    its first 30 lines (its docstring or a comment), so that a reader sees it was a choice."""
    long = {}
    for path in modules().values():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES and not any(LONG_REASON.match(x) for x in lines[:30]):
            long[str(path.relative_to(REPO))] = len(lines)
    assert not long, f"modules over {MAX_LINES} lines without a 'Long: <why>' line at the top (split them by job): {long}"


def test_every_attnrec_variable_in_the_code_is_documented() -> None:
    doc = (REPO / "docs" / "CONFIGURATION.md").read_text()
    documented = set(re.findall(r"`(ATTNREC_[A-Z0-9_]+)`", doc))
    files = subprocess.check_output(["git", "ls-files", "--cached", "--others", "--exclude-standard", *PACKAGES,
                                     "deploy", "docs/bench", "Makefile"], cwd=REPO, text=True).split()
    missing: dict[str, str] = {}
    for f in files:
        path = REPO / f
        if path.suffix in (".png", ".json") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for m in re.finditer(r"ATTNREC_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_]*\*)", text):
            if m.group(0) not in documented:
                missing.setdefault(m.group(0), f"{f}:{text[: m.start()].count(chr(10)) + 1}")
    assert not missing, f"ATTNREC_* names used but not in docs/CONFIGURATION.md: {missing}"


def test_every_setting_names_its_variable_first() -> None:
    """Over every command's settings class: the base's fields and each tool's own."""
    from attnrec.apps.cli import settings_classes

    from attnrec.settings import env_name

    wrong = sorted({n for cls in settings_classes() for n, f in cls.model_fields.items()
                    if not (f.description or "").startswith(env_name(n))})
    assert not wrong, f"descriptions that do not start with their variable: {wrong}"
