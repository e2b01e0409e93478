"""How the network is trained: the optimiser, conservative training, speed switches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from hftl.errors import ConfigError
from hftl.settings.choices import (
    MIXED_PRECISION,
    REGULARIZERS,
    SCHEDULERS,
    check_choice,
    check_not_negative,
    check_positive,
    check_range,
    check_rate,
    learning_rate,
)


@dataclass
class OptimSettings:
    """The optimiser and its schedule."""

    section: ClassVar[str] = "optim"

    epochs: int | None = field(
        default=None,
        metadata={
            "help": "Training epochs. Default: 3, raised on small data so the run takes at least 40 optimizer "
            "steps (at most 30 epochs): under that the default rules were measured behind training from scratch "
            "(docs/calibration.md, 'Between the budgets'). A --streaming run without --max-steps takes 3."
        },
    )
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "--streaming: train for this many optimizer steps instead of --epochs (a stream has no length "
            "to count epochs by); default: --epochs passes when the train split's length is known."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Per-device training batch size."})
    eval_batch_size: int | None = field(
        default=None, metadata={"help": "Per-device eval batch size (default 2x)."}
    )
    lr: float | str | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate, or 'auto': an LR range test on the run's own model and data picks it "
            "(about 100 steps, undone before training). Default: measured per family, strategy and init "
            "(hftl.transfer.defaults, docs/calibration.md; e.g. ResNet full 3e-3, head 9e-2; uncalibrated "
            "families full 5e-5, head 1e-3, scratch 1e-3), printed in the plan.",
            "parse": learning_rate,
        },
    )
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (not on biases and norms)."}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps used for linear warmup."})
    scheduler: str = field(
        default="linear",
        metadata={"help": f"Learning-rate schedule after warmup: {', '.join(SCHEDULERS)} (transformers')."},
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Batches accumulated per optimizer step."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip gradients to this norm (0 disables)."})
    class_weights: str = field(
        default="none",
        metadata={
            "help": "Weigh the training loss per class: none; auto (inverse class frequency in the training split, "
            "capped at 10x the lightest class); or a JSON file {label: weight} naming every class."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop when the --metric-for-best has not improved for N epochs (--streaming: N evaluations; the "
            "best epoch's weights are kept); default: train every epoch."
        },
    )
    seed: int = field(
        default=42, metadata={"help": "Seed for the new head, data order, splits and augmentation."}
    )

    def __post_init__(self) -> None:
        check_positive(self, "batch_size", "gradient_accumulation_steps")
        check_positive(
            self, "epochs", "eval_batch_size", "early_stopping_patience", "max_steps", optional=True
        )
        if self.lr is not None:
            self.lr = learning_rate(self.lr)
        check_range("warmup_ratio", self.warmup_ratio, 0.0, 1.0, closed_high=False)
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        check_not_negative("weight_decay", self.weight_decay)
        check_not_negative("max_grad_norm", self.max_grad_norm)
        if not 0 <= self.seed < 2**32:  # numpy's seeds, which Accelerate's set_seed passes on
            raise ConfigError(f"--seed must be from 0 to {2**32 - 1}, got {self.seed}")


@dataclass
class ConservativeSettings:
    """Conservative training: staying close to the pretrained network."""

    section: ClassVar[str] = "conservative"

    regularizer: list[str] | None = field(
        default=None,
        metadata={
            "help": "Regularizers toward the pretrained solution: l2sp (distance from the pretrained weights), "
            "bss (batch spectral shrinkage of the head-input features); several may be given."
        },
    )
    l2sp_alpha: float = field(
        default=0.01, metadata={"help": "L2-SP strength on the body: alpha/2 * |w - w_pretrained|^2."}
    )
    l2sp_beta: float = field(
        default=0.01, metadata={"help": "L2-SP strength on the new head: beta/2 * |w|^2."}
    )
    bss_eta: float = field(
        default=0.001, metadata={"help": "BSS strength: eta * sum of the k smallest squared singular values."}
    )
    bss_k: int = field(
        default=1, metadata={"help": "BSS: how many of the smallest singular values to shrink."}
    )
    layer_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise lr decay in (0, 1]: a block's lr is lr * decay^(depth from the top); head and "
            "neck depth 0, top layer 1, ..., stem K+1."
        },
    )
    head_lr: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the new head (the body keeps --lr): discriminative lrs."},
    )
    unfreeze_schedule: int | None = field(
        default=None,
        metadata={
            "help": "Gradual unfreezing: train the head (and neck) first, then unfreeze one more block from the "
            "top every N epochs, until the strategy's trainable set is reached."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.regularizer, str):  # YAML/Python may give one name as a string
            self.regularizer = [part for part in self.regularizer.replace("+", ",").split(",") if part]
        for name in self.regularizer or []:
            check_choice("regularizer", name, REGULARIZERS)
        check_positive(self, "bss_k")
        check_positive(self, "unfreeze_schedule", optional=True)
        for name in ("l2sp_alpha", "l2sp_beta", "bss_eta"):
            check_not_negative(name, getattr(self, name))
        check_range("layer_decay", self.layer_decay, 0.0, 1.0, closed_low=False)
        check_rate("head_lr", self.head_lr)


@dataclass
class SpeedSettings:
    """Speed: precision, the frozen-feature cache, the input pipeline and device switches."""

    section: ClassVar[str] = "speed"

    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None,
        metadata={"help": "Autocast precision; default: what `accelerate launch` was configured with."},
    )
    feature_cache: bool = field(
        default=True,
        metadata={
            "help": "When the plan freezes a prefix (head-only, truncated, partial), run it once, cache its outputs "
            "on disk and train the rest on them. Cached features are not augmented: --no-feature-cache keeps "
            "per-epoch augmentation, --cache-views K caches K augmented views."
        },
    )
    feature_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where cached features live (default: $HF_DATASETS_CACHE/hftl-features); reused across runs."
        },
    )
    cache_views: int = field(
        default=1,
        metadata={
            "help": "Images with --augment: cache K augmented views per example; epoch e uses view (e mod K)."
        },
    )
    group_by_length: bool = field(
        default=True,
        metadata={
            "help": "Text: batch examples of similar length together (less padding), seeded per epoch."
        },
    )
    channels_last: bool | None = field(
        default=None,
        metadata={"help": "channels_last memory format for CNN families; default: on for CNNs on a GPU."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel (sdpa, eager, flash_attention_2); default: transformers' (SDPA if supported)."
        },
    )
    compile: bool = field(
        default=False, metadata={"help": "torch.compile the model that is trained (off by default)."}
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Recompute each layer's activations in the backward pass instead of keeping them: much less "
            "memory for about a third more compute (transformers models; timm models through timm's own switch)."
        },
    )
    num_workers: int | None = field(
        default=None, metadata={"help": "DataLoader workers; default 0 on CPU, up to 4 on GPU."}
    )
    ddp_find_unused_parameters: bool = field(
        default=False, metadata={"help": "DDP: search for parameters without gradients each step (slower)."}
    )

    def __post_init__(self) -> None:
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION, optional=True)
        check_positive(self, "cache_views")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
