"""Item content: the attribute file loader, the hashed title features, the model with content
(cold items scored from content alone), training, export through the parity gate, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from attnrec.training.content import (
    TEXT_BUCKETS,
    TITLE_TOKENS,
    ContentTable,
    ItemAttributes,
    attach_content,
    content_arrays,
    content_model_fields,
    load_item_attributes,
    price_bucket,
    title_tokens,
)
from attnrec.training.model import AttnRec, ModelConfig

from attnrec.errors import DataError, ModelCheckError
from attnrec.manifest import verify_files
from attnrec.modelcheck import load_checked
from attnrec.registry import Registry

GOOD_CSV = """item_id,category,brand,price,title
sku-1,shoes,acme,19.99,Acme Running Shoe
sku-2,shoes,,0,Plain shoe
sku-3,phones,zeta,,Zeta Phone X
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------ the loader


def test_good_csv_gives_the_right_table(tmp_path: Path) -> None:
    t = load_item_attributes(_write(tmp_path, "items.csv", GOOD_CSV))
    assert list(t.rows) == ["sku-1", "sku-2", "sku-3"]
    assert t.rows["sku-1"] == ItemAttributes("sku-1", "shoes", "acme", price_bucket(19.99), "Acme Running Shoe")
    assert t.rows["sku-2"].brand == "" and t.rows["sku-2"].price_bucket == 1  # price 0 -> bucket 1
    assert t.rows["sku-3"].price_bucket == 0  # no price: unknown
    assert t.categories == ["phones", "shoes"] and t.brands == ["acme", "zeta"]
    assert price_bucket(19.99) == 1 + 4  # log2(20.99) = 4.39
    assert price_bucket(1e12) == 17  # capped


def test_good_jsonl_with_price_buckets(tmp_path: Path) -> None:
    p = _write(tmp_path, "items.jsonl", '{"item_id": "a", "category": "c1", "price_bucket": 3, "title": "t"}\n\n'
                                        '{"item_id": 7, "brand": "b", "price": 2.5}\n')
    t = load_item_attributes(p)
    assert t.rows["a"].price_bucket == 4 and t.rows["a"].category == "c1"
    assert t.rows["7"].brand == "b" and t.rows["7"].price_bucket == price_bucket(2.5) == 2


@pytest.mark.parametrize(("name", "text", "message"), [
    ("items.csv", "item_id,price\na,1\nb,2\nc,abc\n", "items.csv line 4: price 'abc' is not a number"),
    ("items.csv", "item_id,price\na,-3\n", "items.csv line 2: price '-3' is not a non-negative number"),
    ("items.csv", "item_id,price\na,nan\n", "items.csv line 2: price 'nan' is not a non-negative number"),
    ("items.csv", "item_id,price_bucket\na,x\n", "items.csv line 2: price_bucket 'x' is not a non-negative integer"),
    ("items.csv", "item_id,category\na,c\n,d\n", "items.csv line 3: item_id is missing or empty"),
    ("items.csv", "item_id,category\na,c\nb,d\na,e\n", "items.csv line 4: item_id 'a' already on line 2"),
    ("items.csv", "sku,category\na,c\n", "items.csv line 1: CSV header lacks the item_id column (columns: sku, category)"),
    ("items.csv", "item_id,category\na,c,extra\n", "items.csv line 2: more fields than the header has"),
    ("items.csv", "item_id,category\n", "items.csv: no item rows"),
    ("items.jsonl", '{"item_id": "a"}\n{"item_id": "b", \n', "items.jsonl line 2: not JSON"),
    ("items.jsonl", '["a"]\n', "items.jsonl line 1: not a JSON object"),
    ("items.jsonl", '{"item_id": "a", "title": {"x": 1}}\n', "items.jsonl line 1: title {'x': 1} is not text"),
    ("items.jsonl", '{"item_id": "a", "price": true}\n', "items.jsonl line 1: price True is not a non-negative number"),
])
def test_malformed_rows_give_one_clear_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(DataError) as exc:
        load_item_attributes(_write(tmp_path, name, text))
    assert str(exc.value) == f"{tmp_path / name}{message[len(name):]}" and "\n" not in str(exc.value)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such item attribute file"):
        load_item_attributes(tmp_path / "nope.csv")
    p = tmp_path / "items.csv"
    p.write_bytes(b"item_id,title\na,\xff\xfe\n")
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_item_attributes(p)


# ------------------------------------------------------------------------------ hashing


def test_title_tokens_are_hashed_words_then_char_trigrams() -> None:
    toks = title_tokens("Red Phone")
    want = [f"w:{w}" for w in ("red", "phone")] + ["c:#re", "c:red", "c:ed#", "c:#ph", "c:pho", "c:hon", "c:one", "c:ne#"]
    assert toks == [1 + zlib.crc32(t.encode()) % (TEXT_BUCKETS - 1) for t in want]
    assert all(1 <= t < TEXT_BUCKETS for t in toks)
    assert title_tokens("RED phone!") == toks  # case and punctuation do not matter
    assert len(title_tokens(" ".join(["word"] * 100))) == TITLE_TOKENS
    assert title_tokens("") == []


def test_hashing_is_stable_across_processes() -> None:
    """Python's own hash() is salted per process; the title hashing must not be."""
    code = "from attnrec.training.content import title_tokens; print(title_tokens('Zeta Phone X über-case'))"
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True, cwd=Path(__file__).resolve().parents[2]).stdout)
    assert outs == {f"{title_tokens('Zeta Phone X über-case')}\n"}


# ------------------------------------------------------------------------------ features and the model


def _table() -> ContentTable:
    rows = [ItemAttributes("a", "shoes", "acme", 3, "acme shoe"), ItemAttributes("b", "shoes", "zeta", 5, "zeta shoe"),
            ItemAttributes("c", "phones", "zeta", 9, "zeta phone"), ItemAttributes("new", "phones", "zeta", 9, "zeta phone 2")]
    return ContentTable({r.item_id: r for r in rows})


def test_content_arrays_index_by_vocabulary() -> None:
    arr = content_arrays(_table(), ["c", "a", "other", "new"], warm={2, 3, 4})
    assert arr["category"].tolist() == [0, 0, 1, 2, 0, 1]  # phones=1, shoes=2; PAD, OOV, no-row: 0
    assert arr["brand"].tolist() == [0, 0, 2, 1, 0, 2]
    assert arr["price"].tolist() == [0, 0, 9, 3, 0, 9]
    assert arr["title"].shape == (6, TITLE_TOKENS) and (arr["title"][[0, 1, 4]] == 0).all()
    assert arr["title"][2, :4].tolist() == title_tokens("zeta phone")[:4]
    assert arr["id_mask"].tolist() == [0, 0, 1, 1, 1, 0]


def test_attach_content_appends_cold_items_and_keeps_indices() -> None:
    from attnrec.training.data import dataset_from_events

    from attnrec.events import ClickEvent

    evs = [ClickEvent(f"e{i}", "u1", it, "click", 1000 * i) for i, it in enumerate(["a", "b", "c", "a"])]
    ds = dataset_from_events(evs, "t")
    before = {it: ds.vocab.index(it) for it in ("a", "b", "c")}
    assert attach_content(ds, _table()) == 1
    assert ds.vocab.items[-1] == "new" and {it: ds.vocab.index(it) for it in before} == before
    assert ds.content is not None and ds.content["id_mask"].tolist() == [0, 0, 1, 1, 0, 0]  # 'c' is a test target only
    assert ds.content_info and ds.content_info["cold_items"] == 1 and ds.content_info["warm_items"] == 2


def _content_model(n_items: int = 12, relative: bool = False) -> AttnRec:
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(n_items - 2)]
    rows = {it: ItemAttributes(it, f"c{k % 3}", f"b{k % 4}", k % 7, f"title {it} w{k % 5}") for k, it in enumerate(items)}
    table = ContentTable(rows)
    arrays = content_arrays(table, items, warm=set(range(2, n_items - 2)))  # the last two items are cold
    cfg = ModelConfig(n_items=n_items, max_len=6, d_model=16, n_event_types=4, n_gap_buckets=5, dropout=0.0,
                      positions="relative" if relative else "absolute", id_dropout=0.5,
                      **content_model_fields(table.summary(), arrays))
    torch.manual_seed(int(rng.integers(100)))
    m = AttnRec(cfg)
    m.set_content(arrays)
    return m.eval()


def _batch() -> tuple[torch.Tensor, ...]:
    items = torch.tensor([[0, 0, 2, 3, 4], [5, 6, 7, 11, 3]])  # 11: a cold item in the input
    return items, (items > 0).long(), (items > 0).long() * 2


def test_model_with_content_shapes_and_cold_items_scored_from_content() -> None:
    m = _content_model()
    table = m.item_table()
    assert table.shape == (12, 16) and torch.all(table[0] == 0)  # PAD stays zero
    h, attn = m.final_state(*_batch())
    scores = m.item_scores(h)
    assert scores.shape == (2, 12) and attn.shape == (2, 5)
    assert m.content is not None
    # a cold item's vector is its content vector alone: its id embedding plays no part
    assert torch.allclose(table[10], m.content(torch.tensor([10]))[0])
    with torch.no_grad():
        # the cold items (11 is also in the input) and warm item 9 (not in the input) get other id embeddings
        m.item_emb.weight[[9, 10, 11]] += torch.randn(3, 16)
    scores2 = m.item_scores(m.final_state(*_batch())[0])
    assert torch.allclose(scores2[:, [10, 11]], scores[:, [10, 11]]) and not torch.allclose(scores2[:, 9], scores[:, 9])
    assert torch.allclose(scores2[:, :9], scores[:, :9])
    # ... and its content does: another category moves its score
    with torch.no_grad():
        m.content.f_category[10] = (m.content.f_category[10] % 3) + 1
    assert not torch.allclose(m.item_scores(m.final_state(*_batch())[0])[:, 10], scores2[:, 10])


def test_id_dropout_only_in_training() -> None:
    m = _content_model()
    assert torch.equal(m.item_table(), m.item_table())  # eval: deterministic
    m.train()
    torch.manual_seed(1)
    a, b = m.item_table(), m.item_table()
    assert not torch.equal(a, b)


@pytest.mark.parametrize("relative", [False, True])
def test_materialised_model_scores_the_same(relative: bool) -> None:
    m = _content_model(relative=relative)
    plain = m.materialised()
    assert plain.content is None and not plain.cfg.has_content
    h1, a1 = m.final_state(*_batch())[:2]
    h2, a2 = plain.final_state(*_batch())[:2]
    assert torch.allclose(m.item_scores(h1), plain.item_scores(h2), atol=1e-5) and torch.allclose(a1, a2, atol=1e-6)
    if relative:
        _, _, cache, n = m.final_state(*_batch(), with_cache=True)
        new = (torch.tensor([[11], [2]]), torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long))
        s1 = m.item_scores(m.step(*new, cache, n)[0])
        s2 = plain.item_scores(plain.step(*new, cache, n)[0])
        assert torch.allclose(s1, s2, atol=1e-5)


@pytest.mark.parametrize("loss", ["ce", "sampled", "bce"])
def test_cold_items_are_never_negatives(loss: str) -> None:
    """Only ever a negative, a cold item's own features (a title word no other item has) would
    learn to push it down: the loss gives them no gradient, while a warm item's get one."""
    from attnrec.training.train import TrainConfig, _loss

    m = _content_model()
    m.train()
    assert m.trained_items() is not None and m.trained_items().tolist() == [False, False] + [True] * 8 + [False] * 2
    items = torch.tensor([[2, 3, 4, 5, 6], [7, 8, 9, 2, 3]])
    targets = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 2, 3, 4]])  # warm targets only, as training rows have
    tcfg = TrainConfig(loss=loss, n_negatives=64, negatives_per="position")
    _loss(m, tcfg, items, (items > 0).long(), (items > 0).long(), targets, torch.Generator().manual_seed(0)).backward()
    assert m.content is not None and m.content.text.weight.grad is not None
    grad = m.content.text.weight.grad.abs().sum(1)
    cold_word, warm_word = title_tokens("i8")[0], title_tokens("i3")[0]  # 'w:i8' (cold item 10), 'w:i3' (warm item 5)
    assert cold_word not in m.content.f_title[:10].flatten().tolist()  # no hash collision with a warm item's token
    assert grad[cold_word] == 0 and grad[warm_word] > 0


@pytest.mark.parametrize("split", ["test", "val"])
def test_the_simulator_puts_cold_targets_on_the_chosen_split(split: str) -> None:
    """Cold items appear only as the chosen split's target; the default draws are unchanged."""
    from attnrec.training.sim.content import COLD_TARGETS, generate_content

    evs, _, cold = generate_content(150, 96, 3000, seed=3, p_cold_target=0.5, cold_target=split)
    by_user: dict[str, list[str]] = {}
    for e in evs:
        by_user.setdefault(e.user_id, []).append(e.item_id)
    places = [len(items) - i for items in by_user.values() for i, it in enumerate(items) if it in cold]
    assert len(places) >= 40 and set(places) == {COLD_TARGETS[split]}
    if split == "test":  # the same draws as before the option existed (checksum of that code's output)
        assert zlib.crc32(" ".join(e.item_id for e in evs).encode()) == 498938504
    with pytest.raises(ValueError, match="cold_target"):
        generate_content(10, 96, 100, seed=3, cold_target="train")


def test_training_learns_to_rank_cold_items_from_content(tmp_path: Path) -> None:
    """Tiny planted world: without content a cold target is never in the top 10; with it, often."""
    from attnrec.training.content_eval import split_metrics
    from attnrec.training.data import load_dataset
    from attnrec.training.defaults import default_configs
    from attnrec.training.evaluate import evaluate, model_scorer
    from attnrec.training.sim.content import generate_content, write_attributes_csv
    from attnrec.training.train import train

    torch.set_num_threads(1)
    evs, world, cold = generate_content(200, 96, 4000, seed=3, p_cold_target=0.5)
    (tmp_path / "e.jsonl").write_bytes(b"".join(e.to_json() + b"\n" for e in evs))
    write_attributes_csv(tmp_path / "items.csv", world)
    hr = {}
    for variant in ("without", "with"):
        ds = load_dataset(tmp_path / "e.jsonl", "events")
        if variant == "with":
            attach_content(ds, load_item_attributes(tmp_path / "items.csv"))
        mcfg, tcfg = default_configs(ds)
        mcfg.max_len, mcfg.d_model = 20, 32
        tcfg.epochs, tcfg.threads, tcfg.ema = 12, 1, 0.0
        model, _ = train(ds, mcfg, tcfg)
        res = evaluate(model_scorer(model), ds, "test", mcfg.history_len, return_ranks=True)
        hr[variant] = split_metrics(ds, res["ranks"], cold)
    assert hr["with"]["cold"]["cases"] >= 50
    # measured: without 0.036, with 0.69 (110 cold cases; 12 epochs, one thread)
    assert hr["without"]["cold"]["hr@10"] < 0.1
    assert hr["with"]["cold"]["hr@10"] > 0.4
    assert hr["with"]["all"]["ndcg@10"] > hr["without"]["all"]["ndcg@10"]


# ------------------------------------------------------------------------------ export and registry


@pytest.mark.parametrize("positions", ["absolute", "relative"])
def test_export_with_content_passes_parity_and_carries_the_attributes(tmp_path: Path, positions: str) -> None:
    from attnrec.exporter.checkpoint import load_checkpoint
    from attnrec.exporter.export import export_checkpoint
    from attnrec.exporter.testing import write_random_checkpoint

    ckpt = write_random_checkpoint(tmp_path / "ckpt", n_items=80, max_len=8, d_model=16, n_blocks=2,
                                   n_heads=2, positions=positions, n_cold=10)
    reg = Registry(tmp_path / "reg")
    version = export_checkpoint(ckpt, reg.root, promote=True, top_k=10)
    man = reg.read_manifest(version)
    assert man["parity"]["passed"] and man["parity"]["max_abs_diff"] <= 1e-4
    if positions == "relative":
        assert man["parity_step"]["passed"]
    vdir = reg.version_dir(version)
    assert man["attributes_file"] == "item_attributes.csv"
    assert (vdir / "item_attributes.csv").read_bytes() == (ckpt / "item_attributes.csv").read_bytes()
    assert man["item_content"]["cold_items"] == 10 and man["item_content"]["categories"] == 4
    # the served graph scores cold items exactly as the torch content model does
    loaded = load_checked(vdir)
    model = load_checkpoint(ckpt).model
    items = np.array([[0, 0, 3, 4, 75], [5, 6, 7, 8, 9]], dtype=np.int64)  # 75: a cold item
    warm = np.tile(np.arange(2, 70, dtype=np.int64), (2, 1))  # exclude every warm item: the top 10 are the cold ones
    feed = {"items": items, "types": (items > 0).astype(np.int64), "gaps": (items > 0).astype(np.int64),
            "exclude": warm}
    top_items, top_scores = loaded.session.run(None, feed)[:2]
    with torch.no_grad():
        t = model.item_scores(model.final_state(*(torch.from_numpy(feed[k]) for k in ("items", "types", "gaps")))[0])
    assert sorted(top_items[0].tolist()) == list(range(70, 80)) and np.isfinite(top_scores).all()
    assert np.allclose(top_scores, np.take_along_axis(t.numpy(), top_items, 1), atol=1e-4)
    assert np.ptp(top_scores, axis=1).min() > 1e-3  # scored from content: not one constant for every cold item
    # a changed attribute file no longer matches its manifest
    (vdir / "item_attributes.csv").write_text("item_id\nx\n")
    with pytest.raises(ModelCheckError, match="sha256 mismatch for .*item_attributes.csv"):
        verify_files(vdir, man)


def test_cli_train_with_items(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              caplog: pytest.LogCaptureFixture) -> None:
    from attnrec.apps.cli import main
    from attnrec.training.sim.content import generate_content, write_attributes_csv

    evs, world, cold = generate_content(40, 48, 600, seed=2)
    data = tmp_path / "e.jsonl"
    data.write_bytes(b"".join(e.to_json() + b"\n" for e in evs))
    items = write_attributes_csv(tmp_path / "items.csv", world)
    out = tmp_path / "ckpt"
    assert main(["train", "--data", str(data), "--out", str(out), "--items", str(items), "--epochs", "1",
                 "--max-len", "10", "--d-model", "16", "--id-dropout", "0.2", "--threads", "1", "--quiet"]) == 0
    cfg = json.loads((out / "config.json").read_text())["model"]
    vocab = json.loads((out / "vocab.json").read_text())["items"]
    info = json.loads((out / "content.json").read_text())
    assert cfg["id_dropout"] == 0.2 and cfg["n_categories"] == 9 and cfg["n_text_buckets"] == TEXT_BUCKETS
    assert cfg["n_items"] == len(vocab) + 2 == 48 + 2  # every item of the file is in the vocabulary
    assert info["file"] == "item_attributes.csv" and (out / "item_attributes.csv").read_bytes() == items.read_bytes()
    bad = _write(tmp_path, "bad.csv", "item_id,price\nsku-1,abc\n")
    capsys.readouterr()
    caplog.clear()
    assert main(["train", "--data", str(data), "--out", str(out), "--items", str(bad), "--quiet"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"{bad} line 2: price 'abc' is not a number"]  # one line, no traceback
    assert main(["train", "--data", str(data), "--out", str(out), "--id-dropout", "0.2", "--quiet"]) == 2
    assert "needs item content" in capsys.readouterr().err


def test_a_pretrained_title_encoder_plugs_in() -> None:
    """The hook for a pretrained text encoder: fixed per-item title vectors, projected."""
    from attnrec.training.data import dataset_from_events
    from attnrec.training.defaults import default_configs

    from attnrec.events import ClickEvent

    class Fake:  # what a sentence-transformers model offers: encode(list of str) -> (n, dim)
        def encode(self, titles: list[str]) -> np.ndarray:
            return np.array([[len(t), t.count("zeta"), 1.0] for t in titles], dtype=np.float32)

    evs = [ClickEvent(f"e{i}", f"u{i % 2}", it, "click", 1000 * i) for i, it in enumerate("abcabcab")]
    ds = dataset_from_events(evs, "t")
    attach_content(ds, _table(), encoder=Fake())
    assert ds.content is not None and ds.content["title_vec"].shape == (6, 3)
    assert ds.content["title_vec"][:2].sum() == 0 and ds.content["title_vec"][5].tolist() == [12.0, 1.0, 1.0]
    mcfg, _ = default_configs(ds)
    assert mcfg.text_vec_dim == 3
    m = AttnRec(mcfg)
    m.set_content(ds.content)
    m.eval()
    before = m.item_table()[5].clone()
    with torch.no_grad():
        assert m.content is not None and m.content.title_vec is not None
        m.content.f_title_vec[5] *= 2
    assert not torch.allclose(m.item_table()[5], before)


def test_periodic_trainer_keeps_the_item_content(tmp_path: Path) -> None:
    """A promoted content model is retrained with the attribute file of its checkpoint."""
    import orjson
    from attnrec.apps.cli import main
    from attnrec.exporter.archive import write_event_file
    from attnrec.exporter.export import export_checkpoint
    from attnrec.exporter.settings import TrainerSettings
    from attnrec.exporter.trainer import run_cycle
    from attnrec.training.sim.content import generate_content, write_attributes_csv

    evs, world, _ = generate_content(40, 48, 1200, seed=4)
    data = tmp_path / "first.jsonl"
    data.write_bytes(b"".join(e.to_json() + b"\n" for e in evs[:800]))
    items = write_attributes_csv(tmp_path / "items.csv", world)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "ckpt"), "--items", str(items), "--epochs", "1",
                 "--max-len", "10", "--d-model", "16", "--threads", "1", "--quiet"]) == 0
    cfg = TrainerSettings(registry=tmp_path / "registry", home=tmp_path, trainer_epochs=1, min_new_events=100, trainer_threads=1)
    first = export_checkpoint(tmp_path / "ckpt", cfg.registry_dir, promote=True, force=True)  # 1 epoch: no match for popularity
    write_event_file(cfg.event_log, [orjson.dumps(e.to_dict()) for e in evs])
    out = run_cycle(cfg, archive=False)
    reg = Registry(cfg.registry_dir)
    man = reg.read_manifest(out["version"])
    assert out["train"]["warm_start"] is True and man["parent"] == first
    assert man["attributes_file"] == "item_attributes.csv" and man["item_content"]["items"] == 48
    assert man["model_config"]["n_categories"] == 9 and man["n_items"] == 48 + 2
    assert (reg.version_dir(out["version"]) / "item_attributes.csv").read_bytes() == items.read_bytes()
