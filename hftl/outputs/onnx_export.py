"""``hftl export RUN_DIR --format onnx``: a trained run as a folder ONNX Runtime serves without PyTorch
(``model.onnx``, ``config.json`` with the run's labels, the tokenizer or image processor), checked against PyTorch
before it is put in place.

The run is loaded exactly as ``hftl.load`` loads it (labels, pooling, cut); a LoRA run is merged into its frozen
base (PEFT's ``merge_and_unload``) so the graph holds plain weights, and the check compares against the unmerged
model, so it covers the merge too.

Why ``torch.onnx.export(dynamo=True)`` (torch.export), the exporter torch 2.13 uses by default, and not the
TorchScript tracer: the tracer is deprecated (it warns on every call) and silently records whatever Python branch
the example took, while torch.export fails on a data-dependent branch; transformers 5 dropped the ``torchscript``
option of version 4, and its attention-mask code checks for torch.export. Both exporters give the same logits on every
family hftl trains (BERT family, ViT, ResNet, word vectors, pooled heads, cut models, merged LoRA); torch.export
costs a few seconds more per model and the onnxscript package (the ``export`` extra). The batch and sequence axes
are declared as named dimensions, checked to be dynamic in the written graph, and the check runs a batch of
another size and length than the traced one. optimum is not used: it knows stock model types only, not hftl's
``hftl-pooled-*`` and ``hftl-word-vectors`` ones. timm runs take the same path where timm is installed (it cannot
be imported on the machine this was written on, so that path is untested there); without timm they are refused
with the install command.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from hftl.errors import ConfigError, HftlError, ModelError
from hftl.outputs.artifacts import ADAPTER_CONFIG, ONNX_DIR, is_peft_model
from hftl.outputs.files import check_no_link_leaves, remove_path, space_checked
from hftl.outputs.onnx_check import check_batch, example_batch, max_abs_diff, onnx_logits, torch_logits

FORMATS = ("onnx",)
ONNX_FILE = "model.onnx"
DEFAULT_ATOL = 1e-4
MIN_OPSET = 18  # the oldest opset torch's exporter implements (older requests are converted, or not)
EXTERNAL_DATA_BYTES = 1 << 30  # above this the weights go to model.onnx.data (one protobuf stops at 2 GiB)
WEIGHT_FILES = ("model.safetensors", "model-*-of-*.safetensors", "adapter_model.safetensors")
INSTALL_HINT = "pip install 'hftl[export]' (onnx, onnxscript, onnxruntime)"


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, what its graph takes, and how far ONNX Runtime is from PyTorch."""

    folder: Path
    model_file: Path
    inputs: tuple[str, ...]
    opset: int
    max_abs_diff: float
    atol: float
    checked_on: str


def export(
    run_dir: str | Path,
    *,
    format: str = "onnx",  # noqa: A002 - the flag's name
    output: str | Path | None = None,
    opset: int | None = None,
    atol: float = DEFAULT_ATOL,
    overwrite: bool = False,
) -> ExportResult:
    """Export a run folder to ``output`` (default ``RUN_DIR/onnx``) and check it: ONNX Runtime's logits on a real
    batch must be within ``atol`` of PyTorch's, or nothing is written and a ``ModelError`` says by how much.
    An existing export is replaced only with ``overwrite``; the new one replaces it in one rename."""
    if format not in FORMATS:
        raise ConfigError(f"unknown --format {format!r}; valid formats: {', '.join(FORMATS)}")
    if opset is not None and opset < MIN_OPSET:
        raise ConfigError(f"--opset {opset}: torch's ONNX exporter writes opset {MIN_OPSET} or later")
    if not atol > 0:
        raise ConfigError(f"--atol {atol}: the tolerance must be a positive number such as {DEFAULT_ATOL}")
    require_onnx()
    run = check_run_folder(Path(run_dir))
    target = export_folder(run, output)
    check_replaceable(target, overwrite)
    with _quiet_progress():
        model, processor, modality = load_for_export(run)
        batch = check_batch(run, processor, modality)
    expected = torch_logits(model, batch.inputs)
    graph_model = merged(model)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    remove_path(staging)
    try:
        remedy = "Free space on that disk, or choose another --output."
        with space_checked(target, "the ONNX export", remedy, partial=[staging]):
            staging.mkdir(parents=True)
            to_onnx(graph_model, example_batch(processor, modality), staging / ONNX_FILE, opset)
            graph_model.config.save_pretrained(staging)  # id2label: what each logit means
            processor.save_pretrained(staging)
        written_opset, names = graph_facts(staging / ONNX_FILE, opset)
        diff = max_abs_diff(onnx_logits(staging / ONNX_FILE, batch.inputs), expected)
        if not diff <= atol:  # a NaN difference fails too
            raise ModelError(
                f"the ONNX export of {run} differs from PyTorch by {diff:.3g} (max abs logit difference on "
                f"{batch.origin}), above --atol {atol:g}; nothing was written to {target}. Raise --atol if that "
                "difference is acceptable for your use."
            )
        put_in_place(staging, target)
    finally:
        remove_path(staging)
    result = ExportResult(target, target / ONNX_FILE, names, written_opset, diff, atol, batch.origin)
    print(f"Exported {run} to {result.model_file} (opset {result.opset}; inputs {', '.join(names)})")
    print(
        f"Check: max abs difference ONNX Runtime vs PyTorch {diff:.3g} on {batch.origin} (tolerance {atol:g})"
    )
    return result


def require_onnx() -> None:
    """The exporter's and the check's packages, or how to install them (before any model is loaded)."""
    for package in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(package)
        except ImportError as error:
            raise ConfigError(
                f"ONNX export needs {package}, which is not installed: {INSTALL_HINT}"
            ) from error


def check_run_folder(run_dir: Path) -> Path:
    """A local folder holding a trained model in safetensors (pickled ``.bin`` weights are never loaded), with
    no link that leads out of it."""
    if not run_dir.exists():
        raise ConfigError(f"{run_dir} does not exist: pass the --output-dir of a finished hftl run")
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder: pass the --output-dir of a finished hftl run")
    check_no_link_leaves(run_dir)
    has_weights = any(True for pattern in WEIGHT_FILES for _ in run_dir.glob(pattern))
    if not (run_dir / "config.json").is_file() and not (run_dir / ADAPTER_CONFIG).is_file():
        raise ModelError(
            f"{run_dir} holds no trained model (no config.json): pass the --output-dir of a finished hftl run"
        )
    if not has_weights:
        raise ModelError(
            f"{run_dir} holds no safetensors weights ({', '.join(WEIGHT_FILES)}); hftl never loads pickled "
            "weights (.bin, .pt). Pass the --output-dir of a finished hftl run."
        )
    return run_dir.resolve()


def export_folder(run: Path, output: str | Path | None) -> Path:
    """``RUN_DIR/onnx`` unless ``output`` names another folder; never the run folder or a folder holding it."""
    target = (run / ONNX_DIR) if output is None else Path(output).expanduser().absolute()
    resolved = target.resolve()
    if resolved == run or run.is_relative_to(resolved):
        raise ConfigError(
            f"--output {target} is the run folder or holds it; the export needs a folder of its own "
            f"(default {run / ONNX_DIR})"
        )
    if target.suffix == ".onnx":
        raise ConfigError(
            f"--output {target} names a file; it is the export folder (model.onnx, config.json and the "
            f"processor go inside), e.g. {target.with_suffix('')}"
        )
    return target


def check_replaceable(target: Path, overwrite: bool) -> None:
    """An existing export is replaced only when asked; anything else at ``target`` is never replaced."""
    if not (target.exists() or target.is_symlink()):
        return
    if not overwrite:
        raise ConfigError(
            f"{target} already exists; hftl will not replace it. Pass --overwrite to replace an earlier "
            "export, or choose another --output."
        )
    if target.is_symlink() or not (target / ONNX_FILE).is_file():
        raise ConfigError(
            f"{target} is not an earlier export (no {ONNX_FILE} inside); --overwrite replaces only an export. "
            "Choose another --output."
        )


def load_for_export(run: Path) -> tuple[nn.Module, Any, str]:
    """The run as ``hftl.load`` gives it (a ``PeftModel`` for LoRA), in float32 and evaluation mode, with the
    processor saved beside it and its modality."""
    from hftl.inference.predict import load_processor_of, modality_of, unwrap_peft
    from hftl.modeling.timm_nets import TIMM_MODEL_TYPE, require_timm
    from hftl.outputs.loading import load

    if model_type(run) == TIMM_MODEL_TYPE:
        require_timm()  # without timm: one line saying how to install it, not transformers' ImportError
    try:
        model = load(run)
    except HftlError:
        raise
    except (OSError, ValueError, KeyError, ImportError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelError(
            f"{run} cannot be loaded as a trained model ({type(error).__name__}: {first}); "
            "pass the --output-dir of a finished hftl run"
        ) from error
    modality = modality_of(unwrap_peft(model))
    return model.float().eval(), load_processor_of(run, modality), modality


def model_type(run: Path) -> str | None:
    """The ``model_type`` in the run's config.json (None without one: a LoRA folder from before the base was
    kept)."""
    config = run / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as error:
        raise ModelError(f"{config} is not a JSON object ({error}); is {run} an hftl run folder?") from error


def merged(model: nn.Module) -> nn.Module:
    """LoRA folded into the weights it adapts (one graph of plain layers); other models as they are."""
    return model.merge_and_unload() if is_peft_model(model) else model


class LogitsOnly(nn.Module):
    """The classifier with positional tensor inputs and the logits as its one output: the graph's interface."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: Any) -> Any:
        return self.model(**dict(zip(self.names, tensors, strict=True))).logits


def to_onnx(model: nn.Module, example: dict[str, Any], path: Path, opset: int | None) -> None:
    """Write ``model`` to ``path`` with a dynamic batch axis (and sequence axis for text), traced on ``example``
    (the processor's output: its keys name the graph's inputs)."""
    import torch
    from torch.export import Dim

    names = tuple(example)
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    # a text model's positions bound its sequence axis: declared here, not found by torch.export and retried
    batch, sequence = Dim("batch"), Dim("sequence", max=positions) if positions else Dim("sequence")
    axes = tuple({0: batch, 1: sequence} if example[n].dim() == 2 else {0: batch} for n in names)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        with _quiet_exporter():
            torch.onnx.export(
                LogitsOnly(model, names).eval(),
                tuple(example[n] for n in names),
                str(path),
                input_names=list(names),
                output_names=["logits"],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=(axes,),
                external_data=size > EXTERNAL_DATA_BYTES,
                verbose=False,
            )
    except Exception as error:  # torch.export raises many types; the first line says what it could not trace
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise ModelError(
            f"torch.onnx.export could not export this {type(model).__name__} "
            f"({type(error).__name__}: {lines[0] if lines else ''})"
        ) from error


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """No progress bars while the run loads and its validation rows are read: the export prints two lines, and a
    failure one error line."""
    import datasets
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars[0]:
            transformers_logging.enable_progress_bar()
        if bars[1]:
            datasets.enable_progress_bars()


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's notes that ask nothing of the user (torchvision ops it skips, inputs sharing the batch
    axis's name, its own deprecations) stay out of the output; its errors still surface."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def graph_facts(path: Path, requested: int | None) -> tuple[int, tuple[str, ...]]:
    """The opset written, which must be the one asked for (torch converts some requests after the export), and
    the graph's input names, whose batch (and sequence) axes must have stayed dynamic: on a shape constraint the
    exporter may retry with the axis fixed rather than fail."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if requested is not None and written != requested:
        raise ModelError(
            f"--opset {requested}: the exporter wrote opset {written}; choose an opset it supports (e.g. {written})"
        )
    for node in proto.graph.input:
        dims = node.type.tensor_type.shape.dim
        for axis in (0, 1) if len(dims) == 2 else (0,):
            if not dims[axis].dim_param:
                raise ModelError(
                    f"the exporter fixed axis {axis} of input {node.name!r} to {dims[axis].dim_value}; the export "
                    "would only run at that size"
                )
    return written, tuple(node.name for node in proto.graph.input)


def put_in_place(staging: Path, target: Path) -> None:
    """``staging`` becomes ``target`` by renames; an earlier export is moved aside first and removed after."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists() or target.is_symlink():
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old.exists():
            os.replace(old, target)  # the earlier export stays as it was
        raise
    remove_path(old)
