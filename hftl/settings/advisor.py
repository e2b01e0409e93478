"""The case advisor's thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from hftl.errors import ConfigError
from hftl.settings.choices import (
    ADVISE_POOLINGS,
    check_choice,
    check_positive,
)


@dataclass
class AdvisorSettings:
    """The case advisor (``--case auto``, ``hftl advise``)."""

    section: ClassVar[str] = "advisor"

    advise_budget: float = field(
        default=1.5,
        metadata={
            "help": "Advisor: short trials of every candidate plan on your data (successive halving) may cost "
            "this many full fine-tuning runs; the best on validation is the pick. 0: no trials, the size and "
            "LogME rules below decide."
        },
    )
    advise_small_per_class: int = field(
        default=1000,
        metadata={
            "help": "Advisor: fewer training examples per class than this (on average) is a 'small' dataset."
        },
    )
    advise_similar_logme: float = field(
        default=0.05,
        metadata={
            "help": "Advisor: the top layer's LogME gain over the same network with random weights (nats per "
            "example) from which the target counts as 'similar' to the source."
        },
    )
    advise_depth_margin: float = field(
        default=0.05,
        metadata={
            "help": "Advisor: 'similar' also needs the top layer's LogME within this margin of the best depth's; "
            "a clearly better earlier layer means the late features are source-specific."
        },
    )
    advise_max_samples: int = field(
        default=2000, metadata={"help": "Advisor: score features on at most this many training examples."}
    )
    advise_pooling: Literal["auto", "cls", "mean"] = field(
        default="auto",
        metadata={
            "help": "Advisor: pool transformer hidden states by the first token (cls) or the mean over tokens; "
            "auto = what the run's head reads (mean for a mean-pooled sentence encoder, else cls). ResNet stages are "
            "always globally averaged."
        },
    )

    def __post_init__(self) -> None:
        check_choice("advise_pooling", self.advise_pooling, ADVISE_POOLINGS)
        check_positive(self, "advise_small_per_class", "advise_max_samples")
        if self.advise_budget < 0:
            raise ConfigError(f"advise_budget must be >= 0 (0: no trials), got {self.advise_budget}")
        if self.advise_depth_margin < 0:
            raise ConfigError(f"advise_depth_margin must be >= 0, got {self.advise_depth_margin}")
