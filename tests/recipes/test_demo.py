"""``hftl demo`` in its reduced mode (tiny sizes, seconds): a source model developed with hftl, four case targets,
scratch baselines, one table, a plot; plus the offline data readers it relies on."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

import hftl
from hftl.cli import main as cli_main
from hftl.recipes.demo import CASE_ORDER, run_demo
from hftl.recipes.demo_data import ImageSet, find_fashion_mnist, make_shapes, read_idx


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, quick=True, data="digits", progress=False)


def test_demo_runs_the_four_cases_with_their_default_strategies(quick_demo):
    rows = {(row.case, row.strategy): row for row in quick_demo.rows}
    # the calibrated defaults for a small ResNet, each beside the textbook's head-only plan
    assert list(rows) == [
        ("small_similar", "partial"),
        ("small_similar", "head"),
        ("small_different", "full"),
        ("small_different", "head (truncated)"),
        ("large_similar", "full"),
        ("large_different", "full"),
    ]
    head, cut = rows["small_similar", "head"], rows["small_different", "head (truncated)"]
    assert (
        0
        < head.trainable_percent
        < cut.trainable_percent
        < rows["small_similar", "partial"].trainable_percent
        < rows["small_different", "full"].trainable_percent
        == 100
    )
    assert (
        rows["large_similar", "full"].trainable_percent
        == rows["large_different", "full"].trainable_percent
        == 100
    )
    # one scratch baseline per case, shared by its rows
    assert rows["small_similar", "head"].scratch_accuracy == rows["small_similar", "partial"].scratch_accuracy
    for row in quick_demo.rows:
        assert 0.0 <= row.accuracy <= 1.0 and 0.0 <= row.scratch_accuracy <= 1.0
        assert row.seconds > 0 and row.scratch_seconds > 0
        assert row.benefit["asymptote"] == pytest.approx(row.accuracy - row.scratch_accuracy)
        assert set(row.benefit) == {"start", "auc", "asymptote"}
    assert "digits 0-4" in quick_demo.source and "shapes" in quick_demo.origin  # the offline fallback


def test_demo_transfers_the_source_model_it_developed(quick_demo):
    """small_similar's default (partial, for a small ResNet) keeps the stem and the first half of the source body
    frozen: those weights are the source model's, byte for byte; head-only keeps all of them; the scratch baseline of
    the same architecture starts elsewhere."""
    out = quick_demo.output_dir
    source = hftl.load(out / "source").state_dict()
    partial = hftl.load(
        out / "small_similar" / "transfer"
    ).state_dict()  # the case's own (calibrated) strategy
    head = hftl.load(out / "small_similar" / "head").state_dict()
    scratch = hftl.load(out / "small_similar" / "scratch").state_dict()
    body = [name for name in source if name.startswith("resnet.") and source[name].is_floating_point()]
    early = [
        n
        for n in body
        if n.startswith(("resnet.embedder.", "resnet.encoder.stages.0.", "resnet.encoder.stages.1."))
    ]
    late = [n for n in body if n.startswith(("resnet.encoder.stages.2.", "resnet.encoder.stages.3."))]
    assert early and all(torch.equal(partial[name], source[name]) for name in early)
    assert late and not all(torch.equal(partial[name], source[name]) for name in late if "weight" in name)
    assert all(torch.equal(head[name], source[name]) for name in body)
    assert not all(torch.equal(scratch[name], source[name]) for name in body)
    assert hftl.load(out / "small_different" / "head").config.depths == [1, 1]  # cut after 2 of 4 stages
    assert hftl.load(out / "small_different" / "transfer").config.depths == [1, 1, 1, 1]


def test_demo_writes_table_json_plot_and_logs(quick_demo):
    out = quick_demo.output_dir
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "| case | target | strategy | trainable % | accuracy | scratch accuracy | time (s) |" in table
    assert all(f"| {case} |" in table for case in CASE_ORDER)
    assert "| case | strategy | start | area under curve | asymptote |" in table
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [row["case"] for row in saved["rows"]][::-1][:2] == ["large_different", "large_similar"]
    assert {row["case"] for row in saved["rows"]} == set(CASE_ORDER)
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Transfer plan" in (out / "logs" / "small_different-head.log").read_text(encoding="utf-8")


def test_cli_demo_prints_the_table(tmp_path, capsys):
    args = [
        "demo",
        "--quick",
        "--data",
        "digits",
        "--cases",
        "large_different",
        "--output-dir",
        str(tmp_path),
    ]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "| large_different | shapes, 12/class (60 train) | full | 100.00 |" in out and "Total" in out
    # a second demo into the folder would replace the first one's trained runs: refused before anything runs
    before = (tmp_path / "results.json").read_bytes()
    assert cli_main(args) == 2
    assert "holds an earlier demo (results.json, source-init)" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_bytes() == before


def test_the_demo_replaces_an_earlier_demo_only_when_told_and_never_uses_a_run_folder(tmp_path):
    from hftl.recipes.demo import check_demo_folder

    check_demo_folder(tmp_path / "new", overwrite=False)
    (tmp_path / "source-init").mkdir()
    with pytest.raises(hftl.ConfigError, match="earlier demo"):
        check_demo_folder(tmp_path, overwrite=False)
    check_demo_folder(tmp_path, overwrite=True)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(hftl.ConfigError, match="holds a training run"):
        check_demo_folder(tmp_path, overwrite=True)


def test_cli_demo_rejects_a_folder_without_fashion_mnist(tmp_path, capsys):
    assert cli_main(["demo", "--quick", "--data", str(tmp_path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "expected the Fashion-MNIST files there" in capsys.readouterr().err


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_reads_fashion_mnist_files(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", images)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), images)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big")))
    with pytest.raises(hftl.DataError, match="bad.gz: not an IDX file"):
        read_idx(tmp_path / "bad.gz")
    whole = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])  # an interrupted download
    (tmp_path / "junk.gz").write_bytes(b"\x1f\x8b" + bytes(40))  # a gzip magic and nothing valid after it
    for name in ("cut.gz", "junk.gz"):
        with pytest.raises(hftl.DataError, match=rf"{name}: cannot be read .*download it again"):
            read_idx(tmp_path / name)


def test_read_idx_stops_at_a_bound_however_far_a_file_inflates(tmp_path, monkeypatch):
    import hftl.recipes.demo_data as demo_data

    monkeypatch.setattr(demo_data, "IDX_MAX_BYTES", 1000)
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(bytes(100_000)))
    with pytest.raises(hftl.DataError, match="bomb.gz: more than 0 MiB of data"):
        read_idx(tmp_path / "bomb.gz")


def test_fashion_mnist_is_found_in_a_given_folder(tmp_path):
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        write_idx(tmp_path / name, np.zeros((2, 28, 28), dtype=np.uint8))
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        write_idx(tmp_path / name, np.array([0, 9], dtype=np.uint8))
    assert find_fashion_mnist(tmp_path) == tmp_path
    from hftl.recipes.demo_data import load_fashion_mnist

    assert len(load_fashion_mnist(tmp_path)["train"].labels) == 2
    write_idx(
        tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 9, 3], dtype=np.uint8)
    )  # 3 labels, 2 images
    with pytest.raises(hftl.DataError, match=r"t10k-labels-idx1-ubyte.gz \(3,\).*download them again"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 12], dtype=np.uint8))  # not a class
    with pytest.raises(hftl.DataError, match="max 12"):
        load_fashion_mnist(tmp_path)
    (tmp_path / "short.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 3, 0, 0])))  # a header cut short
    (tmp_path / "flat.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 0])))  # no dimensions
    for name in ("short.gz", "flat.gz"):
        with pytest.raises(hftl.DataError, match=rf"{name}: an IDX header of"):
            read_idx(tmp_path / name)


def test_take_picks_per_class_and_relabels():
    full = ImageSet(
        np.zeros((10, 2, 2), np.uint8), np.array([0, 1, 2, 3, 3, 3, 2, 2, 1, 0]), ("a", "b", "c", "d")
    )
    part = full.take([3, 2], per_class=2, seed=0)
    assert sorted(part.labels.tolist()) == [0, 0, 1, 1] and part.names == ("d", "c")


def test_shapes_are_balanced_and_seeded():
    a, b = make_shapes(3, seed=1), make_shapes(3, seed=1)
    assert a.images.shape == (15, 28, 28) and np.bincount(a.labels).tolist() == [3] * 5
    assert np.array_equal(a.images, b.images) and a.images.max() > 100
