"""Inputs scraped from the web: decode what can be decoded, convert what can be converted, skip and count the
rest, and stop when too much of a split is bad.

Policy: grayscale, palette, RGBA/LA (composited on white), CMYK and 16-bit images are converted to RGB; images over
``--max-image-pixels`` are downscaled as they are read (JPEGs by the decoder itself); 0-byte, truncated, unreadable files and images over PIL's decompression-bomb limit
are skipped; empty or whitespace-only texts are skipped. Every skip is reported with its row and file, and a split
with more than ``--max-bad-fraction`` bad examples stops the run with the first few listed. An image processor whose
configured size would make every image larger than 4096 x 4096 pixels (or ``--max-image-pixels``, where that is more) is
refused before it resizes one.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset
from PIL import Image, ImageFile, UnidentifiedImageError

from hftl.errors import DataError
from hftl.settings.data import DEFAULT_MAX_IMAGE_PIXELS

ERROR = "bad_input"  # column holding the reason an example is skipped ("" when it is fine)


class BadInput(ValueError):
    """One example cannot be used; the message says why."""


@dataclass
class SkipReport:
    """Skipped examples of one split: how many, why, and the first few rows with their files."""

    split: str
    examples: int
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    first: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.skipped / max(self.examples, 1)

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.split}: all {self.examples} examples usable"
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.reasons.items()))
        return f"{self.split}: skipped {self.skipped} of {self.examples} ({reasons}); first: {'; '.join(self.first)}"


def decode_image(raw: Any, target_size: int = 512, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """An RGB PIL image from what ``datasets.Image(decode=False)`` stores (``{"bytes", "path"}``), a PIL image or an
    array, with at most ``max_pixels`` pixels when read from a file; raises BadInput for what cannot be decoded.
    ``target_size`` is the side the model needs: JPEGs are decoded no larger than needed above it."""
    if raw is None:
        raise BadInput("missing image")
    if isinstance(raw, Image.Image):
        return to_rgb(raw)
    if isinstance(raw, dict):
        data, path = raw.get("bytes"), raw.get("path")
        if not data and path and os.path.isfile(path) and os.path.getsize(path) == 0:
            raise BadInput("empty file (0 bytes)")
        if not data and not path:
            raise BadInput("missing image")
        if data is not None and len(data) == 0:
            raise BadInput("empty file (0 bytes)")
        return to_rgb(open_image(io.BytesIO(data) if data else path, max_pixels, target_size))
    array = np.asarray(raw)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise BadInput(f"array of shape {array.shape} is not an image")
    return to_rgb(Image.fromarray(array.astype(np.uint8) if array.dtype != np.uint8 else array))


def open_image(source: Any, max_pixels: int, target_size: int | None = None) -> Image.Image:
    """Open and decode an image file (path or file object) with at most ``max_pixels`` pixels, so memory holds the
    capped image and not the source; raises BadInput, with PIL's reason, for what cannot be decoded."""
    try:
        image = shrink_while_loading(Image.open(source), max_pixels, target_size)
        image.load()
    except Image.DecompressionBombError as error:
        raise BadInput(
            f"over PIL's decompression-bomb limit ({error}): it would be decoded whole before it could be shrunk "
            "(--max-image-pixels caps what is kept, not this); if it is genuine, downscale the file itself first"
        ) from error
    except UnidentifiedImageError as error:
        raise BadInput("not an image file") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise BadInput(f"unreadable or truncated ({error})") from error
    return image


def shrink_while_loading(image: Image.Image, max_pixels: int, target_size: int | None = None) -> Image.Image:
    """An opened, not yet decoded image, downscaled to at most ``max_pixels``.

    A JPEG is asked for a reduced decode (``Image.draft``: DCT scaling by 1/2 to 1/8, so the full-size pixels never
    exist) that keeps each side at least ``target_size`` or the capped size, whichever is smaller; what is still
    over the cap (other formats, or beyond 1/8) is decoded once and reduced right away by ``Image.thumbnail``.
    """
    box = capped_size(image.size, max_pixels)
    if image.format == "JPEG":
        wanted = (min(box[0], target_size), min(box[1], target_size)) if target_size else box
        image.draft("RGB", wanted)
    if image.width * image.height > max_pixels:
        if image.mode.startswith("I;16"):
            image = image.convert("I")  # PIL resamples 32-bit integer pixels, not 16-bit ones
        image.thumbnail(capped_size(image.size, max_pixels))
    return image


def capped_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """The largest size with the aspect ratio of ``size`` and at most ``max_pixels`` pixels (``size`` if it fits)."""
    width, height = size
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: transparency composited on white, 16-bit and float scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        span = array.max() - array.min()
        scaled = (array - array.min()) / span * 255 if span else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def text_problem(text: Any) -> str:
    """Why a text cannot be used ("" when it can)."""
    if text is None:
        return "missing text"
    if isinstance(text, str) and not text.strip():
        return "empty text"
    return ""


def problem(where: str, reason: str) -> str:
    """The ``ERROR`` column's value for a bad example: where it is, then why."""
    return f"{where}: {reason}"


def screen(mapped: Dataset, split: str, limit: float) -> tuple[Dataset, SkipReport]:
    """Drop the rows a map marked bad (column ``ERROR``), report them, and stop when too many are bad."""
    report = SkipReport(split, len(mapped))
    problems = mapped[ERROR] if len(mapped) else []
    bad = [i for i, text in enumerate(problems) if text]
    if bad:
        report.skipped = len(bad)
        report.reasons = dict(Counter(problems[i].split(": ", 1)[1].split(" (")[0] for i in bad))
        report.first = [problems[i] for i in bad[:5]]
        mapped = mapped.select([i for i, text in enumerate(problems) if not text])
    mapped = mapped.remove_columns(ERROR)
    if report.skipped and (report.fraction > limit or report.skipped == report.examples):
        raise DataError(
            f"{report.skipped} of {report.examples} {split} examples ({100 * report.fraction:.1f}%) are unusable, "
            f"above --max-bad-fraction {limit}: {'; '.join(report.first)}. Fix or remove them, or raise "
            "--max-bad-fraction."
        )
    return mapped, report


def allow_truncated_images(allow: bool = False) -> None:
    """PIL decodes truncated files silently when this is on; hftl keeps it off so truncation is reported."""
    ImageFile.LOAD_TRUNCATED_IMAGES = allow


# an image processor may make images this large at most (4096 x 4096; DETR-style 1333 px edges pass), or as large
# as --max-image-pixels lets images be decoded, where that is more
MAX_PROCESSOR_PIXELS = 4 * DEFAULT_MAX_IMAGE_PIXELS


def check_processor_size(processor: Any, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Refuse an image processor whose target size (``size``/``crop_size`` in its preprocessor_config.json, an
    untrusted file) would make every image larger than ``MAX_PROCESSOR_PIXELS`` (or ``max_image_pixels``, where the
    user raised that above it): it would allocate that much per image and fail as a MemoryError (or the kernel's OOM
    killer) deep in a resize."""
    bound = max(MAX_PROCESSOR_PIXELS, max_image_pixels)
    for key in ("size", "crop_size"):
        size = getattr(processor, key, None)
        # a dict, transformers' SizeDict (a dataclass) or one number (a square side)
        if isinstance(size, Mapping):
            fields = dict(size)
        else:
            fields = vars(size) if hasattr(size, "__dict__") else {"side": size}
        number = {k: v for k, v in fields.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if "height" in number and "width" in number:
            pixels = number["height"] * number["width"]
        else:
            edges = [
                number[k] for k in ("longest_edge", "shortest_edge", "side", "height", "width") if k in number
            ]
            pixels = max(edges) ** 2 if edges else 0
        pixels = max([pixels] + [number[k] for k in ("max_pixels", "min_pixels") if k in number])
        if pixels > bound:
            raise DataError(
                f"the image processor resizes to {number} ({key} in its preprocessor_config.json): about "
                f"{pixels:,.0f} pixels per image, more than {bound:,}; fix that file's sizes, or raise "
                "--max-image-pixels to at least that if the model really reads images this large"
            )
