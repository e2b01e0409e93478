"""What runs and where it goes: the task and model, the transfer, outputs and checkpoints, the Hub."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from hftl.errors import ConfigError
from hftl.settings.choices import (
    AUTO_CASE,
    AUTO_METRIC,
    CASES,
    EVAL_STRATEGIES,
    INITS,
    POOLINGS,
    QUANTIZE,
    STRATEGIES,
    Case,
    Strategy,
    check_choice,
    check_head,
    check_not_blank,
    check_positive,
    check_range,
    check_rate,
    check_repo_id,
    shard_size,
    split_names,
)


@dataclass
class RunSettings:
    """What runs, from where to where: the task, the model, the output folder, checkpoints and logs."""

    section: ClassVar[str] = "run"

    task: str | None = field(
        default=None, metadata={"help": "Task name (image, text) or a task-card YAML path."}
    )
    model: str | None = field(
        default=None, metadata={"help": "Hub id or local save_pretrained folder; default: the task card's."}
    )
    revision: str | None = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit) of --model."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the Hub to run. Off unless you turn it on."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Where everything is written (runs/TASK-CASE)."}
    )
    resume: str | None = field(
        default=None,
        metadata={"help": "Resume from a checkpoint folder, or 'auto' for the newest in OUTPUT_DIR."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace a finished run in OUTPUT_DIR: its checkpoints, logs, model, ONNX export (onnx/) and run "
            "files are removed first (other files are left alone). Without it, a folder that holds a run is refused."
        },
    )
    save_steps: int | None = field(
        default=None, metadata={"help": "Also checkpoint every N optimizer steps (always at each epoch end)."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (newest N)."})
    max_shard_size: str = field(
        default="5GB",
        metadata={
            "help": "Largest file of the saved model: bigger models are split into model-0000N-of-0000M "
            "safetensors files with an index (save_pretrained's max_shard_size; the Hub's per-file advice).",
            "parse": shard_size,
        },
    )
    metric_for_best: str = field(
        default=AUTO_METRIC,
        metadata={
            "help": "Validation metric that picks the best epoch: one of the task's metrics (higher is better) "
            "or loss (lower is better); auto: accuracy, or f1_micro for multi-label data (whose metrics are "
            "f1_micro, f1_macro and subset_accuracy)."
        },
    )
    threshold: float = field(
        default=0.5,
        metadata={
            "help": "Multi-label: a label is predicted when its sigmoid score is above this; the validation and "
            "test metrics and the run report use it."
        },
    )
    log_steps: int = field(default=10, metadata={"help": "Log the training loss every N optimizer steps."})
    eval_steps: int | None = field(
        default=None,
        metadata={
            "help": "Also evaluate every N optimizer steps (a finer learning curve; `hftl compare`). With "
            "--streaming, the evaluations (each a checkpoint and a candidate for the best) come every N steps; "
            "default: 5 over the run."
        },
    )
    eval_strategy: Literal["epoch", "end"] = field(
        default="epoch",
        metadata={
            "help": "Evaluate at every epoch end (the best epoch's weights are kept) or once, at the end (the last "
            "epoch's are kept: cheaper when the validation split outweighs the training split). --streaming: "
            "end evaluates after the last step only; each --eval-steps period still ends with a checkpoint."
        },
    )
    report_to: str = field(
        default="auto",
        metadata={
            "help": "Accelerate trackers: auto (TensorBoard when installed, offline-safe), none, all, or names "
            "(tensorboard,wandb,mlflow,...). Logs go to OUTPUT_DIR/logs."
        },
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

    def __post_init__(self) -> None:
        check_not_blank(self, "task", "model", "output_dir", "resume")
        check_positive(self, "log_steps", "save_total_limit", "max_nonfinite_steps")
        self.max_shard_size = shard_size(self.max_shard_size)
        check_positive(self, "save_steps", "eval_steps", optional=True)
        check_choice("eval_strategy", self.eval_strategy, EVAL_STRATEGIES)
        check_range("threshold", self.threshold, 0.0, 1.0, closed_low=False, closed_high=False)


@dataclass
class TransferSettings:
    """What is transferred and how: the case, the strategy, the cut, the init and LoRA."""

    section: ClassVar[str] = "transfer"

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
            "--keep-layers layers, train the rest), lora (PEFT adapters + head), full (fine-tune everything), "
            "contrastive (few-shot text, as SetFit: tune the encoder on same/different-label sentence pairs, then "
            "train a head on its frozen embeddings)."
        },
    )
    keep_layers: int | None = field(
        default=None,
        metadata={
            "help": "Layers/stages kept by small_different (truncation) or frozen by --strategy partial; "
            "default: a per-family value printed in the plan."
        },
    )
    init: Literal["auto", "pretrained", "scratch"] = field(
        default="auto",
        metadata={
            "help": "Start from the pretrained weights, or from random weights (the from-scratch baseline). auto: "
            "the pretrained weights, except that a different case (with no strategy or full, and no transfer-only "
            "setting: l2sp, --keep-layers, --layer-decay, --unfreeze-schedule) first checks them against random "
            "weights (a linear probe on the target) and trains from scratch when they are worse."
        },
    )
    pooling: Literal["auto", "pooler", "cls", "mean", "max"] = field(
        default="auto",
        metadata={
            "help": "How the head reads the encoder: pooler (the family's own head: BERT's [CLS] pooler, ResNet's "
            "average, ViT's [CLS]), cls, mean or max over tokens/positions. auto: what a sentence-transformers "
            "folder declares (modules.json), else pooler. Saved in the model's config."
        },
    )
    head: str = field(
        default="auto",
        metadata={
            "help": "The new head: linear, mlp:N (pooled features -> Linear(N) -> ReLU -> Linear(labels)), or auto "
            "(linear; word vectors: --vectors-hidden-size). Saved in the model's config."
        },
    )
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
    contrastive_iterations: int = field(
        default=20,
        metadata={
            "help": "--strategy contrastive: pair-generation rounds; each gives every training example one "
            "same-label and one different-label partner (2 x N pairs per round; SetFit's num_iterations)."
        },
    )
    contrastive_epochs: int = field(
        default=1, metadata={"help": "--strategy contrastive: epochs over the sentence pairs."}
    )
    contrastive_lr: float = field(
        default=2e-5, metadata={"help": "--strategy contrastive: learning rate of the encoder on the pairs."}
    )
    contrastive_batch_size: int = field(
        default=16, metadata={"help": "--strategy contrastive: sentence pairs per batch."}
    )
    quantize: Literal["4bit"] | None = field(
        default=None,
        metadata={
            "help": "QLoRA: load the base model in 4-bit NF4 (bf16 compute) and train LoRA adapters on it; needs "
            "--strategy lora, a CUDA GPU and bitsandbytes (pip install 'hftl[qlora]')."
        },
    )

    def __post_init__(self) -> None:
        if self.case is None:
            raise ConfigError(f"no case given; choose --case from: {', '.join(CASES)}")
        check_choice("case", self.case, (*CASES, AUTO_CASE))
        check_choice("strategy", self.strategy, STRATEGIES, optional=True)
        check_choice("init", self.init, INITS)
        check_choice("pooling", self.pooling, POOLINGS)
        check_head(self.head)
        check_positive(
            self,
            "lora_r",
            "lora_alpha",
            "contrastive_iterations",
            "contrastive_epochs",
            "contrastive_batch_size",
        )
        check_range("lora_dropout", self.lora_dropout, 0.0, 1.0, closed_high=False)
        if isinstance(self.lora_target_modules, str):  # one name, or a comma list, from Python or YAML
            self.lora_target_modules = split_names(self.lora_target_modules)
        check_rate("contrastive_lr", self.contrastive_lr)
        check_positive(self, "keep_layers", optional=True)
        check_choice("quantize", self.quantize, QUANTIZE, optional=True)
        if self.quantize and self.strategy != "lora":
            raise ConfigError(
                f"--quantize {self.quantize} trains LoRA adapters on a quantized base, which stays frozen: add "
                f"--strategy lora (got {self.strategy or 'the case default'})"
            )
        if self.quantize and self.merge_lora:
            raise ConfigError(
                "--merge-lora with --quantize would merge the adapters into 4-bit weights (lossy); leave --merge-lora "
                "out and merge later into a full-precision copy of the base"
            )


@dataclass
class HubSettings:
    """Publishing to the Hugging Face Hub when the run is done."""

    section: ClassVar[str] = "hub"

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

    def __post_init__(self) -> None:
        if self.push_to_hub is not None:
            check_repo_id(self.push_to_hub)
