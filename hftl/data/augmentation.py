"""Whether a run augments its training images, when ``--augment`` is not given.

hftl's light augmentation (a seeded random resized crop of 60-100% of the area and a flip, ``ImageCollator``) is a
regulariser: it pays where a network sees the same images many times and the crops it makes are images of the same
kind. Measured on the calibration pairs (docs/calibration.md, "Augmentation: hftl's default"):

- **short runs**: below ``MIN_EPOCHS`` epochs (hftl's default budget on over 128 examples at batch 32) it cost full
  fine-tuning 1.3-15.7 points on 10 of 10 image pairs at 3-5 epochs, and moved it by 0.0 and +1.7 on the photos at
  10 ("Between the sizes");
- **registered images**: where every image shows its object centred at one size (Fashion-MNIST, the digits), a crop
  moves and rescales what the data keeps fixed: at 30 epochs it cost full fine-tuning 2.5-9.2 points on 7 of those 8
  pairs and 0.0 on the eighth; on images whose content sits anywhere (the shapes at random places and sizes, photos)
  it gained 2.0-5.7 on 6 of 7 and cost 0.2 on one ("Augmentation: hftl's default");
- **since**, on the 12 large image pairs it leaves unaugmented (registered, or 8 epochs; the same section): scratch
  without augmentation beat scratch with it on all 12, by 0.5-16.7 points.

Registration is measured, not guessed from a name: the mean correlation of each training image (as the model reads
it, grey, 32 px, standardised) with the average of the others. Registered sets score 0.65-0.75 (Fashion-MNIST 0-4 and
5-9, the digits), sets whose content moves 0.11-0.49 (the photos, the shapes): ``REGISTERED`` sits between them,
nearer the shapes (larger sets read a little lower). Held out from it (the same section): the shapes
drawn centred at one size on noise (0.67: augmentation cost the ViT 9.9 points but gained the ResNet 2.9) and
Fashion-MNIST shrunk and placed at random (0.34: it gained the ResNet 8.1, cost the ViT 4.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hftl.data.preprocess import ImageCollator, ModelInputs, image_batch

MIN_EPOCHS = 10  # fewer epochs: no augmentation (docs/calibration.md, "Between the sizes")
REGISTERED = 0.56  # mean image correlation at or above it: registered, no augmentation
SAMPLE = 512  # training images the correlation reads (seeded): +-0.01 on the calibration sets
SIDE = 32  # the grey thumbnails it compares
CHUNK = 64  # images decoded at once


@dataclass(frozen=True)
class Augmentation:
    """What the run does and why (``--augment`` given, or the rule's evidence)."""

    augment: bool
    reason: str
    correlation: float | None = None  # mean image correlation of the training images, where measured

    def to_dict(self) -> dict[str, Any]:
        return {"augment": self.augment, "reason": self.reason, "correlation": self.correlation}

    def log_lines(self, cache_views: int) -> list[str]:
        """What the run log says (``--cache-views`` caches augmented views: without augmentation it caches one)."""
        lines = [f"augmentation: {self.reason}"]
        if not self.augment and cache_views > 1:
            lines.append(
                f"  --cache-views {cache_views} ignored: without augmentation there is one view to cache"
            )
        return lines


def decide_augmentation(
    requested: bool | None,
    modality: str,
    epochs: int,
    inputs: ModelInputs,
    resumed: bool | None = None,
) -> Augmentation:
    """``--augment``/``--no-augment`` as given, or as the run a ``--resume`` continues chose (``resumed``: its
    checkpoints were trained that way); otherwise off for text, streams and runs of fewer than ``MIN_EPOCHS`` epochs,
    and for registered images (``mean_image_correlation`` at or above ``REGISTERED``)."""
    if modality != "image":
        return Augmentation(
            False, "text: no augmentation" + (" (--augment is for images)" if requested else "")
        )
    if requested is not None:
        return Augmentation(requested, f"--augment {str(requested).lower()}")
    if resumed is not None:
        return Augmentation(
            resumed, f"{'on' if resumed else 'off'}, as the run --resume continues (run_config.yaml)"
        )
    if inputs.stream is not None:
        return Augmentation(False, "a stream passes over its data about once: off (--augment turns it on)")
    if epochs < MIN_EPOCHS:
        return Augmentation(
            False,
            f"{epochs} epochs, fewer than {MIN_EPOCHS}: too few passes to overfit, off (--augment turns it on)",
        )
    correlation = mean_image_correlation(inputs)
    if correlation >= REGISTERED:
        return Augmentation(
            False,
            f"registered images (mean image correlation {correlation:.2f} >= {REGISTERED}): crops would move what "
            "the data keeps fixed, off (--augment turns it on)",
            correlation,
        )
    return Augmentation(
        True,
        f"{epochs} epochs on images whose content moves (mean image correlation {correlation:.2f} < {REGISTERED}): "
        "on (--no-augment turns it off)",
        correlation,
    )


def mean_image_correlation(inputs: ModelInputs) -> float:
    """The mean correlation of up to ``SAMPLE`` training images (the same sample for every seed, so that the runs of
    a comparison decide alike) with the average of the others, each image grey, ``SIDE`` px and standardised: near 1
    when every image has the same layout, near 0 when content sits anywhere. Leaving each image out of the average it
    is compared with keeps a few images from scoring high by themselves (one image would match itself: 1.0); blank
    images carry no layout and are left out."""
    assert inputs.image_stats is not None, "image inputs carry their ImageStats"
    count = len(inputs.train)
    rows = np.random.default_rng(0).permutation(count)[:SAMPLE] if count > SAMPLE else np.arange(count)
    thumbs = torch.cat(
        [_thumbnails(inputs, rows[i : i + CHUNK].tolist()) for i in range(0, len(rows), CHUNK)]
    )
    spread = thumbs.std(1, keepdim=True)
    thumbs = ((thumbs - thumbs.mean(1, keepdim=True)) / spread.clamp_min(1e-6))[spread.squeeze(1) > 1e-3]
    if len(thumbs) < 2:
        return 0.0
    others = (thumbs.sum(0, keepdim=True) - thumbs) / (len(thumbs) - 1)
    cosine = (thumbs * others).sum(1) / (thumbs.norm(dim=1) * others.norm(dim=1)).clamp_min(1e-6)
    return float(cosine.mean())


def _thumbnails(inputs: ModelInputs, rows: list[int]) -> torch.Tensor:
    """Grey ``SIDE``-px thumbnails of these training rows, flattened (a few at a time: large images stay small)."""
    pixels = (
        image_batch(list(inputs.train.select(rows)), inputs.image_stats).float().mean(dim=1, keepdim=True)
    )
    return F.interpolate(pixels, size=(SIDE, SIDE), mode="area").flatten(1)


def apply(augmentation: Augmentation, inputs: ModelInputs) -> None:
    """Set the training collator to what was decided (it was built before the run's epochs were known)."""
    if isinstance(inputs.train_collator, ImageCollator):
        inputs.train_collator.augment = augmentation.augment
