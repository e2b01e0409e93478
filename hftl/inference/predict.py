"""``hftl.inference.predict``: label names and scores from any trained model (image, transformer text, word vectors, LoRA),
through ``transformers.pipeline`` on the Accelerate device.

Sources are resolved once here (``resolve``) and shared with ``hftl.inference.embed``: an hftl output folder or Hub id, a
``RunResult``, or a model object with its processor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import PartialState
from torch import nn

from hftl.errors import ConfigError, DataError, ModelError
from hftl.settings.choices import check_positive_integer
from hftl.settings.data import DEFAULT_MAX_IMAGE_PIXELS


@dataclass
class Resolved:
    """A model ready for inference: the task model (LoRA layers active), its processor and its modality."""

    model: nn.Module
    processor: Any
    modality: str  # "image" | "text"
    source: str


def modality_of(model: nn.Module) -> str:
    return "image" if getattr(model, "main_input_name", "input_ids") == "pixel_values" else "text"


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a ``PeftModel``: PEFT injects its layers there, so it still runs the
    adapters (and the trained head) without merging or copying anything."""
    from hftl.outputs.artifacts import is_peft_model

    return model.get_base_model() if is_peft_model(model) else model


def load_processor_of(source: str | Path, modality: str) -> Any:
    """The image processor or tokenizer saved with a model (folder or Hub id)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    loader = AutoImageProcessor if modality == "image" else AutoTokenizer
    try:
        return loader.from_pretrained(str(source))
    except (OSError, ValueError) as error:
        raise ModelError(
            f"no {'image processor' if modality == 'image' else 'tokenizer'} found for {source} "
            f"({type(error).__name__}); pass processor=... or save it beside the weights"
        ) from error


def resolve(source: Any, processor: Any = None) -> Resolved:
    """Turn an hftl output folder/Hub id, a ``RunResult`` or a model object into model + processor + modality."""
    from hftl.outputs.download import resolve_folder
    from hftl.outputs.loading import load

    if isinstance(getattr(source, "model", None), nn.Module) and hasattr(source, "output_dir"):  # a RunResult
        model, origin = source.model, str(source.output_dir)
    elif isinstance(source, nn.Module):
        model = source
        origin = getattr(getattr(unwrap_peft(source), "config", None), "_name_or_path", "") or ""
    else:
        origin = resolve_folder(source)  # a Hub id: its snapshot, so model and processor come from one folder
        model = load(origin)
    model = unwrap_peft(model)
    modality = modality_of(model)
    if processor is None:
        if not origin:
            raise ModelError("this model object does not say where it was loaded from: pass processor=...")
        processor = load_processor_of(origin, modality)
    return Resolved(model, processor, modality, origin)


def as_batch(inputs: Any, batch_size: int = 1) -> tuple[list[Any], bool]:
    """``inputs`` as a list, and whether it was a single input (a string, an array, an image, a path); the batch
    size they will be read in is checked here, before any model loads."""
    check_positive_integer("batch_size", batch_size)
    single = isinstance(inputs, str | np.ndarray | Path) or not isinstance(inputs, Sequence)
    return ([inputs] if single else list(inputs)), single


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def check_texts(items: list[Any]) -> None:
    """A text model reads strings: an image file's path given to one (a model mixed up for another) would be
    scored as the words of its path; one error naming it instead."""
    for i, item in enumerate(items):
        if isinstance(item, Path) or (
            isinstance(item, str) and item.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(item)
        ):
            raise DataError(f"input {i} ({item}) is an image file, and this is a text model: give it texts")


def pipeline_tag(resolved: Resolved) -> str:
    """The task's pipeline tag (from the run's task card when the folder has one), else by modality."""
    from hftl.outputs.loading import task_of

    if resolved.source and Path(resolved.source).is_dir():
        try:
            return task_of(resolved.source, resolved.model.config).pipeline_tag
        except ModelError:
            pass
    return f"{resolved.modality}-classification"


def as_image(item: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Any:
    """An RGB PIL image from a PIL image, a path or URL, or an array (H x W [x C], uint8). Files and URLs are
    decoded with at most ``max_pixels`` pixels (a local JPEG by its decoder); one that cannot be read is a
    ``DataError`` naming it."""
    from PIL import Image, ImageOps

    from hftl.data.bad_inputs import BadInput, open_image, shrink_while_loading

    if isinstance(item, np.ndarray):
        return Image.fromarray(item.astype(np.uint8)).convert("RGB")
    if not isinstance(item, str | Path):
        return item.convert("RGB") if hasattr(item, "convert") else item
    looks_like_a_path = isinstance(item, Path) or str(item).lower().endswith(IMAGE_SUFFIXES)
    if looks_like_a_path and not os.path.isfile(item) and not str(item).startswith(("http://", "https://")):
        raise DataError(f"image {item}: no such file (check the path)")
    try:
        if os.path.isfile(item):
            image = open_image(item, max_pixels)
        else:  # a URL or base64 text, fetched by transformers as pipelines do, then capped
            image = shrink_while_loading(_load_remote(str(item)), max_pixels)
        return ImageOps.exif_transpose(image).convert("RGB")
    except BadInput as error:
        raise DataError(f"image {item}: {error}") from error


def _load_remote(source: str) -> Any:
    """``transformers.image_utils.load_image`` for URLs and base64, its errors (and PIL's) as BadInput."""
    from PIL import Image
    from transformers.image_utils import load_image

    from hftl.data.bad_inputs import BadInput

    try:
        return load_image(source)
    except Image.DecompressionBombError as error:
        raise BadInput(f"over PIL's decompression-bomb limit ({error})") from error
    except (OSError, ValueError) as error:
        raise BadInput(f"cannot be read ({type(error).__name__}: {error})") from error


def predict(
    source: Any,
    inputs: Any,
    *,
    top_k: int | str | None = "auto",
    batch_size: int = 32,
    processor: Any = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[Any] | dict[str, Any]:
    """Classify ``inputs`` (texts, sentence pairs as ``{"text": a, "text_pair": b}`` for a ``--text-columns a b``
    model, or images as PIL/paths/arrays) with a trained model; image files are decoded with at most
    ``max_image_pixels`` pixels (as in training).

    Returns pipeline-style ``{"label": name, "score": probability}`` dicts, best first: one per input for
    ``top_k=1``, else a list of ``top_k`` per input (``None``: every label); a single input (not in a list) gives a
    single result. ``top_k="auto"`` is 1 for a single-label model (softmax scores) and every label for a multi-label
    one, whose scores are each label's own sigmoid probability (they do not sum to 1; the run's threshold, 0.5 by
    default, is in its metrics.json).
    """
    from transformers import pipeline

    if top_k not in ("auto", None) and not (
        isinstance(top_k, int) and not isinstance(top_k, bool) and top_k >= 1
    ):
        raise ConfigError(f"top_k must be a positive integer, 'auto' or None (every label), got {top_k!r}")
    items, single = as_batch(inputs, batch_size)
    if not items:
        return []
    resolved = resolve(source, processor)
    if resolved.modality == "image":
        items = [as_image(item, max_image_pixels) for item in items]
        processors = {"image_processor": resolved.processor}
    else:
        check_texts(items)
        processors = {"tokenizer": resolved.processor}
    classify = pipeline(
        pipeline_tag(resolved), model=resolved.model, device=PartialState().device, **processors
    )
    config = resolved.model.config
    if top_k == "auto":
        top_k = None if config.problem_type == "multi_label_classification" else 1
    # the image pipeline reads top_k=None as its default of 5: every label is asked for by number
    outputs = classify(items, top_k=config.num_labels if top_k is None else top_k, batch_size=batch_size)
    ranked = [[output] if isinstance(output, dict) else list(output) for output in outputs]
    results = [r[0] for r in ranked] if top_k == 1 else ranked
    return results[0] if single else results
