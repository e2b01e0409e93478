"""``hftl export RUN_DIR --format onnx``: for every family hftl trains, the ONNX graph run by ONNX Runtime gives
the logits ``hftl.load`` gives, on batches and lengths other than the traced ones, with the run's labels and
processor beside it; the CLI prints the difference; an earlier export or a run folder is never clobbered; a
missing or non-run folder is one clear error. One-layer models trained for two steps keep it fast."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hftl
from hftl.cli import main
from hftl.outputs import onnx_export
from tests.assets import needs_timm, timm_skip_reason
from tests.conftest import (
    make_bert,
    make_resnet,
    make_vit,
    write_image_folder,
    write_text_csv,
    write_word_vectors,
)
from tests.helpers import quick_train

MISSING = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"ONNX export needs {', '.join(MISSING)}: pip install 'hftl[export]'"
)

# name -> (base model, task, case, extra settings)
RUNS = {
    "bert": ("bert", "text", "large_similar", {}),
    "vit-pooled": ("vit", "image", "large_similar", {"pooling": "mean"}),
    "resnet-cut": ("resnet", "image", "small_different", {}),
    "word-vectors": ("vectors", "text", "small_similar", {}),
    "bert-lora": ("bert", "text", "large_similar", {"strategy": "lora"}),
    # --max-shard-size below the model's size: model-0000N-of-0000M.safetensors and an index (the full model; the
    # frozen base beside a LoRA adapter), as a large or FSDP/ZeRO run saves them
    "bert-sharded": ("bert", "text", "large_similar", {"max_shard_size": "20KB"}),
    "bert-lora-sharded": ("bert", "text", "large_similar", {"strategy": "lora", "max_shard_size": "20KB"}),
}
TEXTS = ["the film was great", "awful", "a dull boring plot and the acting was really quite poor", "lovely"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """Each run once, on demand: two optimizer steps on a tiny base."""
    root = tmp_path_factory.mktemp("export-runs")
    data = {"text": write_text_csv(root / "reviews", sizes=(16, 8)), "image": None}
    bases: dict[str, Path | str] = {}
    done: dict[str, Path] = {}

    def base(kind: str) -> Path | str:
        if kind not in bases:
            makers = {
                "bert": lambda: make_bert(root / "bert", num_layers=1),
                "vit": lambda: make_vit(root / "vit", num_layers=1),
                "resnet": lambda: make_resnet(root / "resnet"),
                "vectors": lambda: f"vectors:{write_word_vectors(root / 'glove.txt')}",
            }
            bases[kind] = makers[kind]()
        return bases[kind]

    def get(name: str) -> Path:
        if name not in done:
            kind, task, case, extra = RUNS[name]
            if task == "image" and data["image"] is None:
                data["image"] = write_image_folder(root / "colours", per_class=(4, 2))
            out = root / "runs" / name
            quick_train(task, case, base(kind), data[task], out, epochs=1, **extra)
            done[name] = out
        return done[name]

    return get


def fresh_batch(run: Path, modality: str) -> dict[str, torch.Tensor]:
    """A batch neither the trace nor the check used: other sizes and lengths."""
    from transformers import AutoImageProcessor, AutoTokenizer

    if modality == "image":
        rng = np.random.default_rng(7)
        images = [rng.integers(0, 256, size=(36, 44, 3), dtype=np.uint8) for _ in range(3)]
        return dict(AutoImageProcessor.from_pretrained(run)(images=images, return_tensors="pt"))
    return dict(AutoTokenizer.from_pretrained(run)(TEXTS, padding=True, return_tensors="pt"))


def onnx_run(model_file: Path, batch: dict[str, torch.Tensor]) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: batch[i.name].numpy() for i in session.get_inputs()})[0]


@pytest.mark.parametrize("name", RUNS)
def test_every_family_exports_and_onnx_runtime_matches_pytorch(name, runs):
    run = runs(name)
    modality = RUNS[name][1]
    if name == "resnet-cut":  # what each run stands for
        assert hftl.TransferPlan.load(run / "transfer_plan.json").truncated
    if name == "vit-pooled":
        assert json.loads((run / "config.json").read_text())["model_type"] == "hftl-pooled-vit"
    if name.endswith("-sharded"):
        assert (run / "model.safetensors.index.json").is_file() and not (run / "model.safetensors").exists()
        assert len(list(run.glob("model-*-of-*.safetensors"))) > 1
    result = hftl.export(run)
    assert result.folder == run / "onnx" and result.model_file.is_file()
    assert result.max_abs_diff <= 1e-4 and result.checked_on.endswith("validation examples")
    # an independent check on a third batch: what hftl.load gives, ONNX Runtime gives
    batch = fresh_batch(result.folder, modality)
    with torch.no_grad():
        expected = hftl.load(run).eval()(**batch).logits.numpy()
    got = onnx_run(result.model_file, batch)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4
    # dynamic axes, the run's labels and processor beside the graph
    import onnx

    graph = onnx.load(str(result.model_file)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert all(shape[0] == "batch" for shape in dims.values())
    if modality == "text":
        assert {"input_ids", "attention_mask"} <= set(dims)
        assert all(shape[1] == "sequence" for shape in dims.values())
    else:
        assert list(dims) == ["pixel_values"]
    run_labels = json.loads((run / "config.json").read_text())["id2label"]
    assert json.loads((result.folder / "config.json").read_text())["id2label"] == run_labels
    assert not any(p.name.startswith(".") for p in run.iterdir() if "onnx" in p.name)  # no staging left
    if "lora" in name:  # merged: plain weights, no LoRA layers in the graph
        assert not any("lora" in init.name for init in graph.initializer)


def test_the_cli_prints_the_difference_and_never_clobbers_an_export(runs, tmp_path, capsys, monkeypatch):
    import onnx

    run = runs("resnet-cut")
    out = tmp_path / "exported"
    assert main(["export", str(run), "--format", "onnx", "--output", str(out), "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    diff = float(printed.split("ONNX Runtime vs PyTorch ")[1].split()[0])
    assert 0 <= diff <= 1e-4 and "6 validation examples" in printed
    assert onnx.load(str(out / "model.onnx")).opset_import[0].version == 18
    before = (out / "model.onnx").read_bytes()
    before_file = tmp_path / "copy.onnx"
    before_file.write_bytes(before)

    assert main(["export", str(run), "--output", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("hftl: error:") and "--overwrite" in error and len(error.splitlines()) == 1

    # above the tolerance: non-zero exit, one line with the difference, the earlier export kept as it was
    # (the graph is a copy of the one just exported: the exporter itself is tested above)
    monkeypatch.setattr(
        onnx_export, "to_onnx", lambda model, example, path, opset: shutil.copy(before_file, path)
    )
    real = onnx_export.torch_logits
    monkeypatch.setattr(onnx_export, "torch_logits", lambda model, inputs: real(model, inputs) + 0.5)
    assert main(["export", str(run), "--output", str(out), "--overwrite"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "differs from PyTorch by 0.5" in error and "--atol" in error
    assert (out / "model.onnx").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.onnx", "exported"]  # no staging folder left
    # a wider --atol lets the same difference pass, and --overwrite then replaces the export
    (out / "model.onnx").write_bytes(b"stale")
    assert main(["export", str(run), "--output", str(out), "--overwrite", "--atol", "1"]) == 0
    assert "vs PyTorch 0.5 " in capsys.readouterr().out and (out / "model.onnx").read_bytes() == before


def test_overwrite_replaces_only_an_earlier_export(runs, tmp_path, monkeypatch):
    run = runs("word-vectors")
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(hftl.ConfigError, match="not an earlier export"):
        hftl.export(run, output=out, overwrite=True)
    for folder in (run, run.parent):  # the run folder, and a folder holding it, are never an export target
        with pytest.raises(hftl.ConfigError, match="the run folder or holds it"):
            hftl.export(run, output=folder, overwrite=True)
    (out / "model.onnx").write_bytes(b"an older export")
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)  # as for a model over 1 GiB: weights beside
    result = hftl.export(run, output=out, overwrite=True)
    files = ["config.json", "model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in out.iterdir()) == files  # the old export replaced whole, notes.txt with it
    assert result.max_abs_diff <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging or old copy left


def test_a_graph_with_a_fixed_axis_or_another_opset_is_refused(tmp_path):
    """What the exporter wrote is read back: an axis it fixed (it may, rather than fail, on a shape constraint)
    or an opset other than the one asked for is an error, not a file that runs at one size only."""
    import onnx
    from onnx import TensorProto, helper

    def graph(batch: int | str, sequence: int | str) -> Path:
        ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, sequence])
        out = helper.make_tensor_value_info("logits", TensorProto.INT64, [batch, sequence])
        model = helper.make_model(
            helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])], "g", [ids], [out]),
            opset_imports=[helper.make_opsetid("", 20)],
        )
        path = tmp_path / f"{batch}-{sequence}.onnx"
        onnx.save(model, str(path))
        return path

    assert onnx_export.graph_facts(graph("batch", "sequence"), 20) == (20, ("input_ids",))
    with pytest.raises(hftl.ModelError, match="fixed axis 1 of input 'input_ids' to 7"):
        onnx_export.graph_facts(graph("batch", 7), None)
    with pytest.raises(hftl.ModelError, match="fixed axis 0"):
        onnx_export.graph_facts(graph(2, "sequence"), None)
    with pytest.raises(hftl.ModelError, match="--opset 21: the exporter wrote opset 20"):
        onnx_export.graph_facts(graph("batch", "sequence"), 21)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist: pass the --output-dir of a finished hftl run"),
        (lambda p: write_text_csv(p / "data", sizes=(2, 2)), "holds no trained model"),
        (lambda p: _pickled_run(p / "pickled"), "never loads pickled weights"),
        (lambda p: _leaky_run(p / "leaky"), "links that lead out of it"),
        (lambda p: _quantized_run(p / "qlora"), "quantized by bitsandbytes (a --quantize 4bit run)"),
    ],
    ids=["missing", "not-a-run", "pickled", "link-out", "qlora"],
)
def test_a_folder_that_is_no_run_is_one_clear_error(make, message, tmp_path, capsys):
    folder = make(tmp_path)
    assert main(["export", str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("hftl: error:") and message in error and len(error.splitlines()) == 1
    assert not (folder / "onnx").exists()


def _pickled_run(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "pytorch_model.bin").write_bytes(b"a pickle")
    return folder


def _quantized_run(folder: Path) -> Path:
    """What a --quantize 4bit run saves: the adapter beside a base whose config says bitsandbytes stored it."""
    from safetensors.torch import save_file

    folder.mkdir()
    quantization = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    (folder / "config.json").write_text(
        json.dumps({"model_type": "bert", "quantization_config": quantization})
    )
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    save_file({"weight": torch.zeros(1)}, str(folder / "adapter_model.safetensors"))
    save_file({"weight": torch.zeros(1)}, str(folder / "model.safetensors"))
    return folder


def _leaky_run(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "model.safetensors").symlink_to(Path(sys.executable).resolve())
    return folder


def test_bad_flags_and_missing_packages_are_refused_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(hftl.ConfigError, match="opset 18 or later"):
        hftl.export(tmp_path, opset=17)
    with pytest.raises(hftl.ConfigError, match="positive"):
        hftl.export(tmp_path, atol=0)
    with pytest.raises(hftl.ConfigError, match="valid formats: onnx"):
        hftl.export(tmp_path, format="tflite")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(hftl.ConfigError, match=r"needs onnxscript.*pip install 'hftl\[export\]'"):
        hftl.export(tmp_path)


@pytest.mark.skipif(
    timm_skip_reason() is None, reason="timm imports here; the missing-timm message is not shown"
)
def test_a_timm_run_without_timm_says_how_to_install_it(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "timm_wrapper", "architecture": "resnet18"})
    )
    save_file({"weight": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(hftl.ModelError, match=r'pip install "hftl\[timm\]"'):
        hftl.export(tmp_path)


@needs_timm
def test_a_timm_run_exports_like_the_other_image_families(tmp_path):
    image_folder = write_image_folder(tmp_path / "colours", per_class=(4, 2))
    out = tmp_path / "run"
    hftl.train(
        task="image",
        case="large_different",
        model="timm:test_resnet",
        init="scratch",
        dataset=str(image_folder),
        output_dir=str(out),
        epochs=1,
        batch_size=8,
        lr=3e-3,
    )
    result = hftl.export(out)
    assert result.max_abs_diff <= 1e-4 and result.inputs == ("pixel_values",)


def test_export_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as done:
        main(["export", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--format", "--output", "--opset", "--atol", "--overwrite"))


def test_a_streamed_runs_check_reads_only_its_first_validation_examples(tmp_path, monkeypatch):
    """A --streaming run's data may not fit in memory: the check reads it as a stream again, never whole."""
    from hftl.config import RunConfig
    from hftl.data import loading
    from hftl.outputs.artifacts import CONFIG_FILE
    from hftl.outputs.onnx_check import validation_items

    data = tmp_path / "data"
    data.mkdir()
    for split, count in (("train", 12), ("validation", 6)):
        rows = [json.dumps({"text": f"{split} text {i}", "label": "ab"[i % 2]}) for i in range(count)]
        (data / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = RunConfig(
        task="text", case="large_similar", streaming=True, max_steps=3, dataset=str(data), max_length=32
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")

    def whole(*args, **kwargs):
        raise AssertionError("a streamed run's dataset was loaded whole")

    monkeypatch.setattr(loading, "splits_for", whole)
    items, pairs, max_length = validation_items(run, "text", 3)
    assert items == ["validation text 0", "validation text 1", "validation text 2"]
    assert pairs is None and max_length == 32
