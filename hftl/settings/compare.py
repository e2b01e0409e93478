"""What ``hftl compare`` adds to the run settings: training sizes, seeds and the learning curve's resolution."""

from __future__ import annotations

from dataclasses import dataclass, field

from hftl.errors import ConfigError
from hftl.settings.choices import check_rate

# the plans `hftl compare` trains against scratch: the four cases' textbook rules (head-only, a cut + head, full
# fine-tuning; large_different's scratch is the baseline itself), partial freezing and LoRA -> (case, strategy)
COMPARE_PLANS = {
    "head": ("small_similar", "head"),
    "head_cut": ("small_different", "head"),
    "partial": ("small_similar", "partial"),
    "lora": ("large_similar", "lora"),
    "full": ("large_similar", "full"),
}


@dataclass
class CompareSettings:
    """What ``hftl compare`` adds to the run settings (flags of `hftl compare`)."""

    plans: str = field(
        default="all",
        metadata={
            "help": "What is compared with scratch: all (" + ", ".join(COMPARE_PLANS) + "), a comma list of "
            "them, or case (only the setup --case/--strategy name; --case auto: the advisor's)."
        },
    )
    train_sizes: str = field(
        default="all",
        metadata={"help": "Comma-separated training-set sizes to compare at, 'all' for the whole split."},
    )
    seeds: str | None = field(
        default=None,
        metadata={"help": "Comma-separated seeds (default: --seed); figures are means over seeds."},
    )
    scratch_lr: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the from-scratch baseline (default: the scratch default)."},
    )
    target: float | None = field(
        default=None,
        metadata={
            "help": "Metric value for 'steps to reach target' (default: 90% of the better arm's best)."
        },
    )
    evals_per_epoch: int = field(
        default=4,
        metadata={"help": "Evaluations per epoch when --eval-steps is not given (learning-curve points)."},
    )

    def __post_init__(self) -> None:
        self.sizes = parse_sizes(self.train_sizes)
        self.plan_list = parse_plans(self.plans)
        self.seed_list = parse_seeds(self.seeds) if self.seeds else None
        if self.evals_per_epoch < 1:
            raise ConfigError(f"evals_per_epoch must be >= 1, got {self.evals_per_epoch}")
        check_rate("scratch_lr", self.scratch_lr)


def parse_plans(text: str) -> list[str] | None:
    """'all' -> every plan, 'case' -> None (the configured setup only), else the named plans."""
    if text == "all":
        return list(COMPARE_PLANS)
    if text == "case":
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in COMPARE_PLANS]
    if unknown or not names:
        raise ConfigError(
            f"--plans: {', '.join(unknown) or repr(text)} unknown; use all, case or some of {', '.join(COMPARE_PLANS)}"
        )
    return names


def parse_sizes(text: str) -> list[int | None]:
    """'100,1000,all' -> [100, 1000, None]."""
    sizes: list[int | None] = []
    for part in (p.strip() for p in str(text).split(",")):
        if part.lower() == "all":
            sizes.append(None)
        elif part.isdigit() and int(part) > 0:
            sizes.append(int(part))
        else:
            raise ConfigError(
                f"--train-sizes: {part!r} is not a positive integer or 'all' (e.g. 100,1000,all)"
            )
    return sizes


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError as error:
        raise ConfigError(
            f"--seeds: expected comma-separated integers such as 1,2,3, got {text!r}"
        ) from error
    wrong = [seed for seed in seeds if not 0 <= seed < 2**32]  # as --seed: before any run trains
    if wrong:
        raise ConfigError(f"--seeds: each seed must be from 0 to {2**32 - 1}, got {wrong[0]}")
    return seeds
