"""The plans ``--case auto``'s trials choose among, and their tie order: within noise, the earlier plan wins (and is
kept first when rung 0 has more plans within noise than it promotes).

On images full fine-tuning comes first on every size. Run as a user's command runs it (hftl's augmentation default),
it beat partial fine-tuning on all 13 small_different pairs from five ViTs (+0.7 to +43.7 points, 3 seeds;
docs/calibration.md, "ViT small_different: full against partial") and on the ResNets' digits, shapes and photos at 20
per class (+1.1 to +9.9), and was level on the four similar pairs measured without augmentation (Fashion-MNIST at 20
per class: within 0.3 points on three, 1.9 ahead on the fourth); at 50 per class it was ahead or level on five of six
and 4.1 behind on one (docs/calibration.md, "Between the sizes"). Trials on such pairs tie more often than not
(153-500 validation examples): with partial first, --case auto ended 1.4 points under the rule on the 12 of those ViT
pairs it ran on, on average (5.8 at worst, within a point or ahead on 5); with full first, from the same sources, 0.2
over (1.2 under at worst, within a point or ahead on 10). Over the 20 small image pairs of the auto table it gained
1.9 points on average against the rows of the order before (ahead on 13; behind on 6, by 0.3-3.3: two photo pairs,
the ResNets' two Fashion-MNIST pairs, the small ViT's digits, and the 12-layer ViT's Fashion pair, where the trials,
run again, tied full fine-tuning with the LoRA they had picked outright); those earlier rows predate the augmentation
default, so part of the gain is its. Held out on two sources not used to set it (the 32-wide ViT and the ResNet 4x as
wide, Fashion 5-9 and digits at 20 per class): within a point of the rule or ahead on 3 of 4, and 2.2 points under
partial fine-tuning on the wide ResNet's Fashion pair, where the trials tied the two on every seed.

Elsewhere the order follows the textbook's size rule, measured: on small data partial fine-tuning first (within a
point of full fine-tuning on 10 of the 12 pairs where both were measured, at 0.6 of its cost), on large data full
fine-tuning first (the case table's large rule: fine-tune the whole network). Short trials undertrain full
fine-tuning most (one epoch of 226 sentences left the tiny BERT's full fine-tuning 2-19 points under partial, where
full runs ended 4 points over it), so partial first on every size gave large pairs to partial where full won by 3-4
points. Measured on the calibration pairs (docs/calibration.md, the auto tables, 3 seeds; partial first on small
images then), full first above ``FULL_FIRST_PER_CLASS`` put ``--case auto`` within a point of the best plan on 21 of
27 pairs (20 with partial first everywhere), 0.4 points under it on average (0.8) and 2.5 at worst (4.3:
tinybert-yelp-350 went from 4.3 under to 1.6 over); held out, on the 5 UCI imdb pairs, within 0.4 points on all, and
on 12 image pairs from sources developed on Fashion-MNIST 5-9, within 0.3 points on 11 (2.6 under on vit59-digits-20,
where full fine-tuning, 7.5-11.4 points behind partial in the trials, overtook it only late); on 8 pairs of real
photos (153 validation photos: a trial's noise is 6-7 points, so the trials mostly tie and this order decides)
0.0-3.9 points under the best plan and behind the default rule on 5, by up to 3.9; above scratch on the four from
small ViTs. Replayed on the recorded trials, full first everywhere lost 2.3 points on Fashion 5-9 at 20 per class
(when every full fine-tuning run augmented: without it, as hftl's default runs on registered images, full fine-tuning
there is level with partial, 90.6% against 90.5%). Head-only comes before LoRA, scratch last (where the source check
finds the pretrained features worse than random ones, ``--case auto`` trains from scratch without trials:
``hftl.advisor.trials.scratch_without_trials``).
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset, LargeList, List

from hftl.config import RunConfig
from hftl.settings import VECTORS_PREFIX


@dataclass(frozen=True)
class Candidate:
    """One plan the trials may pick: the case and strategy it runs as, and its cost per example-epoch relative to
    full fine-tuning (what it trains and, for frozen prefixes, what the feature cache saves)."""

    name: str
    case: str
    strategy: str
    init: str = "pretrained"
    cost: float = 1.0


# the small-data tie order
CANDIDATES = (
    Candidate("partial", "small_similar", "partial", cost=0.6),
    Candidate("full", "large_similar", "full", cost=1.0),
    Candidate("head", "small_similar", "head", cost=0.35),
    Candidate("lora", "large_similar", "lora", cost=0.8),
    Candidate("scratch", "large_different", "full", init="scratch", cost=1.0),
)
# above this many training examples per class, full fine-tuning goes first: the calibration's small pairs have 16-20
# per class and its large ones 144-1,000 (bench/calibrate.py's small/large line is this constant). It orders ties
# only; the cheap prior's size rule (``--advise-small-per-class``, hftl.advisor.decision) is a separate threshold
FULL_FIRST_PER_CLASS = 50


def examples_per_class(train: Dataset, label_column: str) -> float:
    """Training examples over classes (labels, for multi-label rows)."""
    feature = train.features[label_column]
    lists = isinstance(feature, List | LargeList)
    count = getattr(feature.feature if lists else feature, "num_classes", None)
    if not count:
        rows = train[label_column]
        count = len({label for row in rows for label in row} if lists else set(rows))
    return len(train) / max(count, 1)


def candidates_for(
    config: RunConfig, per_class: float | None = None, modality: str | None = None
) -> list[Candidate]:
    """The plans that apply to the model (word vectors have no layer stack to freeze in part, nor LoRA targets), in
    their tie order: ``CANDIDATES``', or full fine-tuning first on images and above ``FULL_FIRST_PER_CLASS``
    training examples per class."""
    candidates = list(CANDIDATES)
    if str(config.model).startswith(VECTORS_PREFIX):
        candidates = [c for c in candidates if c.strategy not in ("partial", "lora")]
    if modality == "image" or (per_class is not None and per_class > FULL_FIRST_PER_CLASS):
        candidates.sort(key=lambda c: c.name != "full")
    return candidates


def order_reason(order: list[str], per_class: float | None, modality: str | None = None) -> str:
    """Why the tie order starts where it does, for the trials' printed verdict ("" for the usual order)."""
    if not order or order[0] != "full":
        return ""
    if modality == "image":
        return "full first: images"
    if per_class is not None and per_class > FULL_FIRST_PER_CLASS:
        return f"full first: {per_class:,.1f} training examples per class, more than {FULL_FIRST_PER_CLASS}"
    return ""


__all__ = [
    "CANDIDATES",
    "FULL_FIRST_PER_CLASS",
    "Candidate",
    "candidates_for",
    "examples_per_class",
    "order_reason",
]
