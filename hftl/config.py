"""RunConfig: every setting of a run in one dataclass, from CLI flags, a YAML file or Python keyword arguments.

The three sources use the same names and merge as: CLI/Python keywords over YAML over the task card's defaults
over the dataclass defaults. The CLI is derived from the dataclass (``HfArgumentParser``), so a field's ``help``
is written once.
"""

import argparse
import dataclasses
import difflib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hftl.errors import ConfigError, unknown_choice

CASES = ("small_similar", "small_different", "large_similar", "large_different")
AUTO_CASE = "auto"  # issue 7: the advisor picks one of CASES from the data (hftl.advisor)
REGULARIZERS = ("l2sp", "bss")
ADVISE_POOLINGS = ("auto", "cls", "mean")
STRATEGIES = ("head", "partial", "lora", "full")
INITS = ("pretrained", "scratch")
MIXED_PRECISION = ("no", "fp16", "bf16")
# word vectors (--model vectors:PATH_OR_NAME)
VECTORS_PREFIX = "vectors:"
VECTOR_FORMATS = ("auto", "word2vec-bin", "word2vec-txt", "glove", "kv")
WORD_SPLITS = ("words", "whitespace")
OOV_INITS = ("random", "zeros", "mean")
VECTOR_POOLINGS = ("mean", "max")
VECTOR_ENCODERS = ("bag", "cnn")

Case = Literal["small_similar", "small_different", "large_similar", "large_different", "auto"]
Strategy = Literal["head", "partial", "lora", "full"]


@dataclass
class RunConfig:
    """All settings of one transfer run. Field names are the CLI flags (``--batch-size`` or ``--batch_size``)."""

    # what to transfer, and how
    task: str | None = field(
        default=None, metadata={"help": "Task name (image, text) or a task-card YAML path."}
    )
    case: Case | None = field(
        default=None,
        metadata={
            "help": "Transfer case: target data size x similarity to the source data; 'auto' lets the advisor "
            "pick it from the data (see `hftl advise`)."
        },
    )
    strategy: Strategy | None = field(
        default=None,
        metadata={
            "help": "Override the case's strategy: head (train a new head only), partial (freeze the first "
            "--keep-layers layers, train the rest), lora (PEFT adapters + head), full (fine-tune everything)."
        },
    )
    model: str | None = field(
        default=None, metadata={"help": "Hub id or local save_pretrained folder; default: the task card's."}
    )
    revision: str | None = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit) of --model."}
    )
    keep_layers: int | None = field(
        default=None,
        metadata={
            "help": "Layers/stages kept by small_different (truncation) or frozen by --strategy partial; "
            "default: a per-family value printed in the plan."
        },
    )
    init: Literal["pretrained", "scratch"] = field(
        default="pretrained",
        metadata={
            "help": "Start from the pretrained weights, or from random weights (the from-scratch baseline)."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the Hub to run. Off unless you turn it on."}
    )

    # data
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, image folder, CSV/JSON/Parquet file(s) or a save_to_disk folder; "
            "default: the task card's."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration name of a Hub dataset."}
    )
    input_column: str | None = field(
        default=None, metadata={"help": "Column with the images or texts; default: found from the task card."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Column with the labels; default: found from the task card."}
    )
    validation_split: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of train held out (stratified, seeded) when the dataset has no validation split."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training examples (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many validation examples (quick runs)."}
    )
    max_length: int = field(default=128, metadata={"help": "Text: truncate token sequences to this length."})
    augment: bool = field(
        default=True,
        metadata={"help": "Images: light train-time augmentation (random resized crop and flip)."},
    )

    # optimisation
    epochs: int = field(default=3, metadata={"help": "Training epochs."})
    batch_size: int = field(default=32, metadata={"help": "Per-device training batch size."})
    eval_batch_size: int | None = field(
        default=None, metadata={"help": "Per-device eval batch size (default 2x)."}
    )
    lr: float | None = field(
        default=None,
        metadata={"help": "Peak learning rate; default per strategy (head 1e-3, lora 5e-4, else 5e-5)."},
    )
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (not on biases and norms)."}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps used for linear warmup."})
    scheduler: str = field(
        default="linear",
        metadata={"help": "Learning-rate schedule after warmup (any transformers SchedulerType)."},
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Batches accumulated per optimizer step."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip gradients to this norm (0 disables)."})
    seed: int = field(
        default=42, metadata={"help": "Seed for the new head, data order, splits and augmentation."}
    )
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None,
        metadata={"help": "Autocast precision; default: what `accelerate launch` was configured with."},
    )

    # LoRA
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names LoRA adapts; default: per family (attention q/v, or convs)."},
    )
    merge_lora: bool = field(
        default=False, metadata={"help": "Also write the merged model to OUTPUT_DIR/merged."}
    )

    # word vectors (--model vectors:PATH_OR_NAME)
    vectors_format: Literal["auto", "word2vec-bin", "word2vec-txt", "glove", "kv"] = field(
        default="auto",
        metadata={"help": "Word vectors: file format; auto detects it from the file (extension and header)."},
    )
    vectors_limit: int | None = field(
        default=None,
        metadata={
            "help": "Word vectors: load only the first N vectors (the most frequent words, in most files)."
        },
    )
    vectors_lowercase: bool | None = field(
        default=None,
        metadata={
            "help": "Word vectors: lowercase the texts; default: if the vectors are lowercase (GloVe)."
        },
    )
    vectors_split: Literal["words", "whitespace"] = field(
        default="words",
        metadata={"help": "Word vectors: split texts into words and punctuation, or at whitespace only."},
    )
    vectors_min_freq: int = field(
        default=1, metadata={"help": "Word vectors: vocabulary words occur at least this often in train."}
    )
    vectors_max_vocab: int | None = field(
        default=None, metadata={"help": "Word vectors: keep at most this many (most frequent) words."}
    )
    vectors_oov_init: Literal["random", "zeros", "mean"] = field(
        default="random",
        metadata={
            "help": "Word vectors: rows of words without a vector: random (scaled to the vectors), zeros, mean."
        },
    )
    vectors_pooling: Literal["mean", "max"] = field(
        default="mean",
        metadata={"help": "Word vectors: pool the words of a text by mean or max (padding masked)."},
    )
    vectors_encoder: Literal["bag", "cnn"] = field(
        default="bag",
        metadata={
            "help": "Word vectors: pool the vectors directly (bag) or after a 1-D CNN (kernels 3,4,5)."
        },
    )
    vectors_hidden_size: int = field(
        default=128,
        metadata={"help": "Word vectors: hidden units of the MLP classifier (0: a linear layer)."},
    )

    # outputs, checkpoints, logging
    output_dir: str | None = field(
        default=None, metadata={"help": "Where everything is written (runs/TASK-CASE)."}
    )
    resume: str | None = field(
        default=None,
        metadata={"help": "Resume from a checkpoint folder, or 'auto' for the newest in OUTPUT_DIR."},
    )
    save_steps: int | None = field(
        default=None, metadata={"help": "Also checkpoint every N optimizer steps (always at each epoch end)."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (newest N)."})
    metric_for_best: str = field(
        default="accuracy", metadata={"help": "Validation metric that picks the best epoch."}
    )
    log_steps: int = field(default=10, metadata={"help": "Log the training loss every N optimizer steps."})
    report_to: str = field(
        default="auto",
        metadata={
            "help": "Accelerate trackers: auto (TensorBoard when installed, offline-safe), none, all, or names "
            "(tensorboard,wandb,mlflow,...). Logs go to OUTPUT_DIR/logs."
        },
    )
    num_workers: int | None = field(
        default=None, metadata={"help": "DataLoader workers; default 0 on CPU, up to 4 on GPU."}
    )
    ddp_find_unused_parameters: bool = field(
        default=False, metadata={"help": "DDP: search for parameters without gradients each step (slower)."}
    )

    # Hub
    push_to_hub: str | None = field(
        default=None,
        metadata={
            "help": "Hub repo id (owner/name) to publish to when the run is done: the LoRA adapter (with its head) "
            "or the full model, with processor and model card. A failed push prints the retry command."
        },
    )
    hub_private: bool = field(
        default=False, metadata={"help": "Create the --push-to-hub repository as private."}
    )

    # reliability: bad data, non-finite steps, out of memory
    max_bad_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Unreadable images and empty texts are skipped and reported; stop when more than this "
            "fraction of a split is bad."
        },
    )
    data_encoding: str = field(
        default="utf-8", metadata={"help": "Text encoding of CSV/TSV/JSON files (e.g. latin-1)."}
    )
    max_nonfinite_steps: int = field(
        default=5,
        metadata={"help": "Skip steps with a NaN/inf loss or gradient; stop after this many in a row."},
    )
    auto_batch_size: bool = field(
        default=False,
        metadata={
            "help": "On out-of-memory, halve the per-device batch and double gradient accumulation (same "
            "effective batch) until it fits."
        },
    )

    # speed: frozen-feature cache, input pipeline, device switches (issue 5)
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

    # transfer intelligence (issue 7): the case advisor (--case auto, `hftl advise`)
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
            "auto = cls, what hftl's classification heads read. ResNet stages are always globally averaged."
        },
    )
    # conservative training (issue 7): stay close to the pretrained network
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
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "Also evaluate every N optimizer steps (a finer learning curve; `hftl compare`)."},
    )

    def __post_init__(self) -> None:
        if self.task is None:
            from hftl.tasks import available_tasks

            raise ConfigError(f"no task given; choose --task from: {', '.join(available_tasks())}")
        if self.case is None:
            raise ConfigError(f"no case given; choose --case from: {', '.join(CASES)}")
        _check_choice("case", self.case, (*CASES, AUTO_CASE))
        _check_choice("strategy", self.strategy, STRATEGIES, optional=True)
        _check_choice("init", self.init, INITS)
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION, optional=True)
        for name in (
            "epochs",
            "batch_size",
            "gradient_accumulation_steps",
            "lora_r",
            "max_length",
            "log_steps",
            "cache_views",
        ):
            _check_positive(name, getattr(self, name))
        for name in ("keep_layers", "eval_batch_size", "max_train_samples", "max_eval_samples", "save_steps"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        self._check_vectors()
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ConfigError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        _check_positive("max_nonfinite_steps", self.max_nonfinite_steps)
        self._check_transfer_intelligence()
        if not 0.0 < self.validation_split < 1.0:
            raise ConfigError(f"validation_split must be in (0, 1), got {self.validation_split}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.push_to_hub is not None:
            from hftl.hub import check_repo_id

            check_repo_id(self.push_to_hub)
        if self.output_dir is None:
            task_name = Path(self.task).stem
            self.output_dir = str(Path("runs") / f"{task_name}-{self.case}")

    def _check_vectors(self) -> None:
        _check_choice("vectors_format", self.vectors_format, VECTOR_FORMATS)
        _check_choice("vectors_split", self.vectors_split, WORD_SPLITS)
        _check_choice("vectors_oov_init", self.vectors_oov_init, OOV_INITS)
        _check_choice("vectors_pooling", self.vectors_pooling, VECTOR_POOLINGS)
        _check_choice("vectors_encoder", self.vectors_encoder, VECTOR_ENCODERS)
        _check_positive("vectors_min_freq", self.vectors_min_freq)
        for name in ("vectors_limit", "vectors_max_vocab"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        if self.vectors_hidden_size < 0:
            raise ConfigError(f"vectors_hidden_size must be >= 0, got {self.vectors_hidden_size}")
        if str(self.model or "").startswith(VECTORS_PREFIX):
            if self.model == VECTORS_PREFIX:
                raise ConfigError(
                    "--model vectors: needs a file or gensim-data name, e.g. vectors:glove.6B.100d.txt"
                )
            if self.strategy == "lora":  # fail before the vectors and the data are loaded
                from hftl.backbones.vectors import LORA_MESSAGE

                raise ConfigError(LORA_MESSAGE)

    def _check_transfer_intelligence(self) -> None:
        """Issue 7's settings: advisor thresholds and conservative training."""
        if isinstance(self.regularizer, str):  # YAML/Python may give one name as a string
            self.regularizer = [part for part in self.regularizer.replace("+", ",").split(",") if part]
        for name in self.regularizer or []:
            _check_choice("regularizer", name, REGULARIZERS)
        _check_choice("advise_pooling", self.advise_pooling, ADVISE_POOLINGS)
        for name in ("advise_small_per_class", "advise_max_samples", "bss_k"):
            _check_positive(name, getattr(self, name))
        for name in ("unfreeze_schedule", "eval_steps"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        for name in ("l2sp_alpha", "l2sp_beta", "bss_eta", "advise_depth_margin"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.head_lr is not None and self.head_lr <= 0:
            raise ConfigError(f"head_lr must be > 0, got {self.head_lr}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, ready for YAML/JSON."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _check_choice(name: str, value: Any, valid: Sequence[str], optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in valid:
        raise unknown_choice(name, value, valid)


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(RunConfig))


def check_keys(values: Mapping[str, Any], source: str) -> None:
    """Reject settings that RunConfig does not have, naming the source and the closest valid name."""
    for key in values:
        if key not in FIELD_NAMES:
            close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown setting {key!r}{hint}; see `python -m hftl.train --help`")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML run config (same keys as the CLI flags, with underscores)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot parse config file {path}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a run config must be a YAML mapping of setting: value")
    values = {key.replace("-", "_"): value for key, value in values.items()}
    check_keys(values, str(path))
    return values


def build_parser() -> argparse.ArgumentParser:
    """The CLI parser, derived from RunConfig, plus ``--config``."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        RunConfig, description="Transfer a pretrained Hugging Face model to a new task."
    )
    parser.add_argument("--config", type=str, default=None, help="YAML file with settings (CLI flags win).")
    return parser


def explicit_cli_values(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` and keep only the flags the user actually gave, so lower layers can fill the rest."""
    parser = build_parser()
    for action in parser._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS
    namespace = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    return vars(namespace)


def resolve_config(values: Mapping[str, Any]) -> RunConfig:
    """Merge explicit values over the YAML file they name (``config``) over the task card's defaults."""
    from hftl.tasks import get_task

    values = dict(values)
    config_path = values.pop("config", None)
    check_keys(values, "settings")
    layered = load_yaml(config_path) if config_path else {}
    layered.update(values)
    task_name = layered.get("task")
    if task_name is not None:
        task = get_task(task_name)
        check_keys(task.defaults, f"task card {task.name!r} defaults")
        layered = {**task.defaults, **layered}
    return RunConfig(**layered)
