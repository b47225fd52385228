"""Registry and load-time checks: publish, promote, rollback, history, and every rejection path.

One random-weight model is exported once per module (a few seconds); each test works on
its own copy under tmp_path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from attnrec.errors import ModelCheckError, RegistryError
from attnrec.manifest import load_items, sha256_file, verify_files
from attnrec.modelcheck import check_model, load_checked
from attnrec.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A registry holding one checked version of a random-weight model."""
    from attnrec.exporter.export import export_checkpoint
    from attnrec.exporter.testing import write_random_checkpoint

    base = tmp_path_factory.mktemp("base")
    ckpt = write_random_checkpoint(base / "ckpt", n_items=120, max_len=12, d_model=16)
    version = export_checkpoint(ckpt, base / "registry")
    return base / "registry", version


@pytest.fixture()
def reg(published: tuple[Path, str], tmp_path: Path) -> tuple[Registry, str]:
    root, version = published
    shutil.copytree(root, tmp_path / "registry")
    return Registry(tmp_path / "registry"), version


def republish(reg: Registry, version: str, model_bytes: bytes | None = None, **manifest_changes: object) -> str:
    """Publish a copy of ``version`` with optional new model bytes / manifest fields."""
    vdir = reg.version_dir(version)
    manifest = reg.read_manifest(version)
    manifest.update(manifest_changes)
    for key in ("version", "created_at", "model_sha256"):
        manifest.pop(key)
    src = vdir / "model.onnx"
    if model_bytes is not None:
        src = reg.root.parent / "candidate.onnx"
        src.write_bytes(model_bytes)
    return reg.publish(src, manifest, items=load_items(vdir, reg.read_manifest(version)))


def test_published_version_layout_and_manifest(reg: tuple[Registry, str]) -> None:
    registry, version = reg
    vdir = registry.version_dir(version)
    assert sorted(p.name for p in vdir.iterdir()) == ["items.json", "manifest.json", "model.onnx"]
    m = registry.read_manifest(version)
    assert m["version"] == version and version.split("-")[1] == m["model_sha256"][:6]
    assert m["model_sha256"] == sha256_file(vdir / "model.onnx")
    assert [i["name"] for i in m["inputs"]] == ["items", "types", "gaps", "exclude"]
    assert [o["name"] for o in m["outputs"]] == ["top_items", "top_scores", "attn"]
    assert m["top_k"] == 10 and m["max_len"] == 12 and m["pad_index"] == 0 and m["oov_index"] == 1
    assert m["uses_types"] and m["uses_gaps"] and m["popularity"]
    assert m["parity"]["passed"] and m["parity"]["max_abs_diff"] <= 1e-4 and m["parity"]["top10_agreement"] >= 0.999
    assert m["metrics"]["protocol"] == "loo-full-ranking"
    assert load_items(vdir, m)[:2] == ["item-2", "item-3"]
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".tmp-")]


def test_load_checked_returns_a_serving_model(reg: tuple[Registry, str]) -> None:
    registry, version = reg
    loaded = load_checked(registry.version_dir(version))
    assert loaded.version == version and loaded.items[0] == "item-2"
    g = loaded.manifest["golden"]
    out = loaded.session.run(None, {k: np.asarray(g[k], dtype=np.int64) for k in ("items", "types", "gaps", "exclude")})
    assert out[0].tolist() == g["top_items"]


def test_sha256_mismatch_is_rejected_at_load(reg: tuple[Registry, str]) -> None:
    registry, version = reg
    model = registry.version_dir(version) / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelCheckError, match="sha256 mismatch"):
        check_model(registry.version_dir(version))
    with pytest.raises(ModelCheckError, match="sha256 mismatch"):
        registry.promote(version, reason="test")
    assert registry.current_version() is None


def test_items_sidecar_mismatch_is_rejected(reg: tuple[Registry, str]) -> None:
    registry, version = reg
    (registry.version_dir(version) / "items.json").write_text(json.dumps(["x"] * 118))
    with pytest.raises(ModelCheckError, match="sha256 mismatch for .*items.json"):
        load_checked(registry.version_dir(version))


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_broken_model_file_is_rejected_at_publish(reg: tuple[Registry, str], kind: str) -> None:
    registry, version = reg
    good = (registry.version_dir(version) / "model.onnx").read_bytes()
    bad = good[: len(good) // 2] if kind == "truncated" else bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    before = sorted(p.name for p in registry.root.iterdir())
    with pytest.raises(ModelCheckError, match="onnxruntime cannot load"):
        republish(registry, version, bad)
    assert sorted(p.name for p in registry.root.iterdir()) == before  # nothing half-published


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_broken_model_file_is_rejected_at_load(reg: tuple[Registry, str], kind: str) -> None:
    """Even when the manifest's sha256 agrees (file replaced and manifest rewritten)."""
    registry, version = reg
    vdir = registry.version_dir(version)
    good = (vdir / "model.onnx").read_bytes()
    bad = good[: len(good) // 3] if kind == "truncated" else b"\x00garbage" * 500
    (vdir / "model.onnx").write_bytes(bad)
    m = registry.read_manifest(version)
    m["model_sha256"] = sha256_file(vdir / "model.onnx")
    (vdir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelCheckError, match="onnxruntime cannot load"):
        load_checked(vdir)


def test_wrong_input_contract_is_rejected(reg: tuple[Registry, str]) -> None:
    import onnx

    registry, version = reg
    model = onnx.load(str(registry.version_dir(version) / "model.onnx"))
    for node in model.graph.node:
        node.input[:] = ["seen" if x == "exclude" else x for x in node.input]
    model.graph.input[3].name = "seen"
    with pytest.raises(ModelCheckError, match=r"inputs are \['items', 'types', 'gaps', 'seen'\]"):
        republish(registry, version, model.SerializeToString())


def test_wrong_output_dtype_is_rejected(reg: tuple[Registry, str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    registry, version = reg
    model = onnx.load(str(registry.version_dir(version) / "model.onnx"))
    old = model.graph.output[1].name
    model.graph.node.append(helper.make_node("Cast", [old], ["top_scores_f64"], to=TensorProto.DOUBLE))
    model.graph.output[1].CopyFrom(helper.make_tensor_value_info("top_scores_f64", TensorProto.DOUBLE, ["B", 10]))
    with pytest.raises(ModelCheckError, match="outputs are|float64|double"):
        republish(registry, version, model.SerializeToString())


def test_nan_outputs_are_rejected_at_publish(reg: tuple[Registry, str]) -> None:
    import onnx
    from onnx import numpy_helper

    registry, version = reg
    model = onnx.load(str(registry.version_dir(version) / "model.onnx"))
    for init in model.graph.initializer:  # poison the final LayerNorm / item table: NaN scores
        if init.name.startswith("model.item_emb"):
            arr = numpy_helper.to_array(init).copy()
            arr[:] = np.nan
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    with pytest.raises(ModelCheckError, match="non-finite"):
        republish(registry, version, model.SerializeToString())


def test_golden_mismatch_is_rejected(reg: tuple[Registry, str]) -> None:
    registry, version = reg
    m = registry.read_manifest(version)
    golden = dict(m["golden"])
    golden["top_scores"] = [[s + 0.5 for s in row] for row in golden["top_scores"]]
    with pytest.raises(ModelCheckError, match="golden top_scores differ"):
        republish(registry, version, golden=golden)


def test_missing_manifest_field_is_rejected(reg: tuple[Registry, str]) -> None:
    registry, version = reg
    vdir = registry.version_dir(version)
    m = registry.read_manifest(version)
    del m["golden"]
    (vdir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelCheckError, match="lacks field.*golden"):
        check_model(vdir)


def test_promote_rollback_and_history(reg: tuple[Registry, str]) -> None:
    registry, a = reg
    b = republish(registry, a)
    c = republish(registry, a)
    assert len({a, b, c}) == 3  # same file, same minute: suffixed names
    registry.promote(a, reason="first")
    registry.promote(b, reason="second", figures={"new_ndcg@10": 0.05})
    registry.promote(c, reason="third")
    assert registry.current_version() == c
    assert registry.rollback() == b
    assert registry.rollback() == a
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert registry.current_version() == a
    hist = registry.history()
    assert [(h["decision"], h["version"], h["previous"]) for h in hist] == [
        ("promoted", a, None), ("promoted", b, a), ("promoted", c, b), ("rollback", b, c), ("rollback", a, b)]
    assert hist[1]["figures"] == {"new_ndcg@10": 0.05} and all(h["ts"].endswith("Z") for h in hist)
    listed = registry.versions()
    assert [v["current"] for v in listed].count(True) == 1
    assert next(v for v in listed if v["current"])["version"] == a


def test_rollback_without_current_and_unknown_version(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "empty")
    assert registry.current_version() is None and registry.versions() == [] and registry.history() == []
    with pytest.raises(RegistryError, match="has no CURRENT"):
        registry.rollback()
    with pytest.raises(RegistryError, match="is not in the registry"):
        registry.promote("20261128T0000-abcdef", reason="x")
    with pytest.raises(RegistryError, match="invalid version name"):
        registry.version_dir("../etc")


def test_current_is_replaced_atomically(reg: tuple[Registry, str]) -> None:
    """A reader polling CURRENT during many promotions only ever sees a whole version name."""
    registry, a = reg
    b = republish(registry, a)
    registry.promote(a, reason="start")
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add((registry.root / "CURRENT").read_text())

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(200):
            registry.promote(b if i % 2 == 0 else a, reason="flip", verify=False)
    finally:
        stop.set()
        t.join()
    assert seen <= {a + "\n", b + "\n"} and len(seen) == 2
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".CURRENT")]
    assert len(registry.history()) == 201


def test_registry_check_and_cli_modules_do_not_import_torch_or_onnx() -> None:
    code = ("import sys, attnrec.registry, attnrec.modelcheck, exporter.cli, exporter.trainer; "
            "bad = [m for m in ('torch', 'onnx', 'kafka') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    code = "import sys, attnrec.registry; assert 'onnxruntime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_verify_files_names_the_missing_file(reg: tuple[Registry, str]) -> None:
    registry, version = reg
    vdir = registry.version_dir(version)
    (vdir / "items.json").unlink()
    with pytest.raises(ModelCheckError, match="items.json is missing"):
        verify_files(vdir, registry.read_manifest(version))


def test_a_non_finite_figure_in_a_manifest_is_written_as_null(reg: tuple[Registry, str]) -> None:
    """A training curve with a NaN loss crashed the publish (strict JSON refuses NaN), and with it
    the periodic trainer's cycle: the figure is written as null instead."""
    registry, version = reg
    curve = [{"epoch": 1, "loss": 8.4}, {"epoch": 2, "loss": float("nan")}, {"epoch": 3, "loss": float("inf")}]
    new = republish(registry, version, training={"curve": curve})
    m = registry.read_manifest(new)
    assert [r["loss"] for r in m["training"]["curve"]] == [8.4, None, None]
    json.loads((registry.version_dir(new) / "manifest.json").read_text())  # strict JSON
