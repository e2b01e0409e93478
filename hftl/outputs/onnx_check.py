"""The check after an ONNX export: ONNX Runtime and PyTorch must give the same logits on the same batch.

The batch is the run's own validation examples when its dataset is a local path that still exists (what the
model will really see: real pixels, real words, real padding), else synthetic inputs shaped by the run's
processor: random images through its image processor, or texts of several lengths built from the tokenizer's
vocabulary. The graph is traced on a different, smaller batch (``example_batch``), so a graph that silently fixed
the batch size or the sequence length fails this check instead of failing in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from hftl.errors import HftlError, ModelError
from hftl.outputs.artifacts import CONFIG_FILE
from hftl.untrusted_yaml import load_untrusted_yaml

CHECK_ROWS = 8  # validation examples the check runs (a few batches' worth of shapes, seconds on a CPU)
SYNTHETIC_ROWS = 5  # synthetic inputs when the run's data is not at hand: not the traced example's 2
IMAGE_SIDES = ((48, 40), (40, 56))  # synthetic images are resized by the processor, as real ones are


@dataclass
class CheckBatch:
    """Model inputs for the check, and where they came from (printed beside the difference)."""

    inputs: dict[str, torch.Tensor]
    origin: str


def encode(
    processor: Any,
    modality: str,
    items: list[Any],
    pairs: list[str] | None = None,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """``items`` (PIL images or texts, with their second sentences for pair tasks) as a padded tensor batch."""
    if modality == "image":
        return dict(processor(images=items, return_tensors="pt"))
    options: dict[str, Any] = {"padding": True, "return_tensors": "pt"}
    if max_length:
        options.update(truncation=True, max_length=max_length)
    return dict(processor(items, pairs, **options) if pairs else processor(items, **options))


def synthetic_items(processor: Any, modality: str, count: int, seed: int) -> list[Any]:
    """``count`` inputs of different sizes: noise images, or texts of 2, 5, 8, ... words from the vocabulary."""
    rng = np.random.default_rng(seed)
    if modality == "image":
        from PIL import Image

        sides = [IMAGE_SIDES[i % len(IMAGE_SIDES)] for i in range(count)]
        return [
            Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB") for w, h in sides
        ]
    special = set(getattr(processor, "all_special_tokens", []))
    words = sorted(w for w in processor.get_vocab() if w not in special and w.isalpha()) or ["text"]
    return [" ".join(rng.choice(words, size=2 + 3 * i)) for i in range(count)]


def example_batch(processor: Any, modality: str) -> dict[str, torch.Tensor]:
    """The batch the graph is traced with: two synthetic inputs (dimensions of size 1 would be fixed by the
    exporter, so never one example or one token)."""
    return encode(processor, modality, synthetic_items(processor, modality, 2, seed=1))


def check_batch(run_dir: Path, processor: Any, modality: str) -> CheckBatch:
    """The run's validation examples when they can be read here, else synthetic inputs (saying why)."""
    try:
        items, pairs, max_length = validation_items(run_dir, modality, CHECK_ROWS)
        return CheckBatch(
            encode(processor, modality, items, pairs, max_length), f"{len(items)} validation examples"
        )
    except _NoRows as reason:
        items = synthetic_items(processor, modality, SYNTHETIC_ROWS, seed=2)
        return CheckBatch(encode(processor, modality, items), f"{len(items)} synthetic inputs ({reason})")


class _NoRows(Exception):
    """Why the run's validation examples cannot be used for the check."""


def validation_items(run_dir: Path, modality: str, count: int) -> tuple[list[Any], list[str] | None, int]:
    """The first ``count`` validation inputs of the run, as the run split and truncated them. Only a dataset
    that is a local path is read: a Hub id could mean a download in the middle of an export."""
    from hftl.config import resolve_config
    from hftl.inference.predict import as_image

    settings_file = run_dir / CONFIG_FILE
    if not settings_file.is_file():
        raise _NoRows(f"no {CONFIG_FILE} in the run folder")
    try:
        config = resolve_config(load_untrusted_yaml(settings_file.read_text(encoding="utf-8")))
        if not config.dataset or not Path(config.dataset).expanduser().exists():
            raise _NoRows(f"the run's dataset {config.dataset!r} is not a local path here")
        splits = run_splits(config, count)
        rows = splits.validation.select(range(min(count, len(splits.validation))))
        items = list(rows[splits.input_column])
        pairs = list(rows[splits.pair_column]) if splits.pair_column else None
        if modality == "image":
            items = [as_image(item) for item in items]
        elif not all(isinstance(text, str) and text for text in items + (pairs or [])):
            raise _NoRows("some of the first validation texts are empty")
    except (HftlError, OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as error:
        raise _NoRows(
            f"the run's validation split cannot be read: {type(error).__name__}: {error}"
        ) from error
    if not items:
        raise _NoRows("the validation split is empty")
    return items, pairs, config.max_length


def run_splits(config: Any, count: int) -> Any:
    """The run's splits; a streamed run's (``--streaming``) as a stream again, so that only its first ``count``
    validation examples are read (a dataset streamed for being too large for memory is never loaded whole here)."""
    from hftl.data.loading import splits_for
    from hftl.tasks import get_task

    task = get_task(config.task)
    if not config.streaming:
        return splits_for(config, task)
    from hftl.data.stream_splits import stream_splits

    return stream_splits(config.replace(max_eval_samples=count, class_weights="none"), task)


def torch_logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """The model's logits in evaluation mode, as float32 numpy."""
    with torch.no_grad():
        return model.eval()(**inputs).logits.float().numpy()


def onnx_logits(path: Path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """ONNX Runtime's first output (the logits) for ``inputs``, on the CPU; the graph's inputs must all be
    there (an exporter may drop inputs the model never reads, never add any)."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types, not importable by name
        raise ModelError(f"onnxruntime cannot load {path}: {error}") from error
    wanted = [node.name for node in session.get_inputs()]
    missing = [name for name in wanted if name not in inputs]
    if missing:
        raise ModelError(
            f"{path} expects inputs {missing} that the run's processor does not produce ({sorted(inputs)})"
        )
    try:
        return session.run(None, {name: inputs[name].numpy() for name in wanted})[0]
    except Exception as error:  # a graph that fixed a shape fails here, on a batch of another size or length
        shapes = {name: tuple(inputs[name].shape) for name in wanted}
        raise ModelError(f"onnxruntime cannot run {path} on inputs of shapes {shapes}: {error}") from error


def max_abs_diff(onnx_out: np.ndarray, torch_out: np.ndarray) -> float:
    """The largest absolute difference between two logit arrays (shapes must agree: a shape mismatch is a
    broken export, not a small difference)."""
    if onnx_out.shape != torch_out.shape:
        raise ModelError(f"ONNX logits have shape {onnx_out.shape}, PyTorch's {torch_out.shape}")
    return float(np.abs(onnx_out.astype(np.float64) - torch_out.astype(np.float64)).max())
