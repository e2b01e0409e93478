"""RunConfig: every setting of a run, from CLI flags, a YAML file or Python keyword arguments, kept in sections.

The settings live in one dataclass per concern (``hftl.settings``: run, transfer, data, optim, conservative,
vectors, advisor, speed, hub), each validated where it is defined. ``RunConfig`` joins them: it takes the same flat
keywords as the CLI flags and YAML keys (``RunConfig(task="image", lr=1e-3)``), reads and writes them flat
(``config.lr``) or by section (``config.optim.lr``), and checks what spans sections. The three sources merge as:
CLI/Python keywords over YAML over the task card's defaults over the dataclass defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import numbers
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hftl.errors import ConfigError
from hftl.settings import (
    AUTO_CASE,
    CASES,
    FIELD_SECTION,
    SECTIONS,
    STRATEGIES,
    VECTORS_LORA_MESSAGE,
    VECTORS_PREFIX,
    AdvisorSettings,
    ConservativeSettings,
    DataSettings,
    HubSettings,
    OptimSettings,
    RunSettings,
    SpeedSettings,
    TransferSettings,
    VectorsSettings,
)
from hftl.settings.choices import contrastive_refusal
from hftl.untrusted_yaml import load_untrusted_yaml

__all__ = ["AUTO_CASE", "CASES", "FIELD_NAMES", "STRATEGIES", "VECTORS_PREFIX", "RunConfig", "resolve_config"]

# the order of run_config.yaml and RunConfig.to_dict(): unchanged since settings were one flat dataclass
FIELD_NAMES = (
    "task", "case", "strategy", "model", "revision", "keep_layers", "init", "trust_remote_code", "dataset",
    "dataset_config", "input_column", "label_column", "validation_split", "max_train_samples", "max_eval_samples",
    "max_length", "augment", "epochs", "batch_size", "eval_batch_size", "lr", "weight_decay", "warmup_ratio",
    "scheduler", "gradient_accumulation_steps", "max_grad_norm", "seed", "mixed_precision", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_modules", "merge_lora", "vectors_format", "vectors_limit", "vectors_lowercase",
    "vectors_split", "vectors_min_freq", "vectors_max_vocab", "vectors_oov_init", "vectors_pooling",
    "vectors_encoder", "vectors_hidden_size", "output_dir", "resume", "save_steps", "save_total_limit",
    "metric_for_best", "log_steps", "report_to", "num_workers", "ddp_find_unused_parameters", "push_to_hub",
    "hub_private", "max_bad_fraction", "data_encoding", "max_nonfinite_steps", "auto_batch_size", "feature_cache",
    "feature_cache_dir", "cache_views", "group_by_length", "channels_last", "attn_implementation", "compile",
    "advise_small_per_class", "advise_similar_logme", "advise_depth_margin", "advise_max_samples",
    "advise_pooling", "regularizer", "l2sp_alpha", "l2sp_beta", "bss_eta", "bss_k", "layer_decay", "head_lr",
    "unfreeze_schedule", "eval_steps", "early_stopping_patience", "overwrite_output_dir", "pooling", "head",
    "advise_budget", "max_image_pixels", "class_weights", "text_columns", "eval_strategy", "label_columns",
    "problem_type", "threshold", "contrastive_iterations", "contrastive_epochs", "contrastive_lr",
    "contrastive_batch_size", "gradient_checkpointing", "max_shard_size", "quantize", "streaming", "max_steps",
    "shuffle_buffer", "labels", "label_scan_examples",
)  # fmt: skip
assert sorted(FIELD_NAMES) == sorted(FIELD_SECTION), "every setting belongs to exactly one section"


class RunConfig:
    """All settings of one transfer run: flat keywords in, sections inside (``config.optim``, ``config.data``...).

    ``config.lr`` and ``config.optim.lr`` are the same value; assigning either changes both.
    """

    run: RunSettings
    transfer: TransferSettings
    data: DataSettings
    optim: OptimSettings
    conservative: ConservativeSettings
    vectors: VectorsSettings
    advisor: AdvisorSettings
    speed: SpeedSettings
    hub: HubSettings

    def __init__(self, **values: Any) -> None:
        check_keys(values, "RunConfig")
        if values.get("task") is None:
            from hftl.tasks import available_tasks

            raise ConfigError(f"no task given; choose --task from: {', '.join(available_tasks())}")
        for section in SECTIONS:
            own = {key: value for key, value in values.items() if FIELD_SECTION[key] is section}
            object.__setattr__(self, section.section, section(**own))
        self._check_across_sections()

    def _check_across_sections(self) -> None:
        model = str(self.run.model or "")
        if model.startswith(VECTORS_PREFIX):
            if model == VECTORS_PREFIX:
                raise ConfigError(
                    "--model vectors: needs a file or gensim-data name, e.g. vectors:glove.6B.100d.txt"
                )
            if self.transfer.strategy == "lora":  # fail before the vectors and the data are loaded
                raise ConfigError(VECTORS_LORA_MESSAGE)
            if self.transfer.strategy == "contrastive":
                raise ConfigError(contrastive_refusal("word-vectors"))
            if self.speed.gradient_checkpointing:
                raise ConfigError(
                    "--gradient-checkpointing does not apply to word vectors: the classifier is an embedding lookup "
                    "and a small head, with no layer stack to recompute; leave the flag out"
                )
        if self.run.eval_strategy == "end" and self.optim.early_stopping_patience:
            raise ConfigError(
                "--early-stopping-patience needs an evaluation per epoch: drop it or use --eval-strategy epoch"
            )
        if self.optim.lr == "auto" and (self.conservative.layer_decay or self.conservative.head_lr):
            raise ConfigError(
                "--lr auto picks one learning rate; with --layer-decay or --head-lr give --lr explicitly"
            )
        check_streaming(self)
        if self.run.output_dir is None:
            self.run.output_dir = str(Path("runs") / f"{Path(self.run.task).stem}-{self.transfer.case}")

    def __getattr__(self, name: str) -> Any:
        section = FIELD_SECTION.get(name)
        if section is None or section.section not in self.__dict__:
            raise AttributeError(f"RunConfig has no setting {name!r}")
        return getattr(self.__dict__[section.section], name)

    def __setattr__(self, name: str, value: Any) -> None:
        section = FIELD_SECTION.get(name)
        if section is None:
            raise AttributeError(f"RunConfig has no setting {name!r}")
        setattr(self.__dict__[section.section], name, value)

    def replace(self, **changes: Any) -> RunConfig:
        """A new, validated RunConfig with ``changes`` applied (``dataclasses.replace`` for sections)."""
        return RunConfig(**{**self.to_dict(), **changes})

    def __copy__(self) -> RunConfig:
        return self.replace()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"RunConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items() if v is not None)})"

    def to_dict(self) -> dict[str, Any]:
        """Plain values, ready for YAML/JSON, in the long-standing order of run_config.yaml."""
        values = {
            key: value
            for section in SECTIONS
            for key, value in dataclasses.asdict(self.__dict__[section.section]).items()
        }
        return {key: values[key] for key in FIELD_NAMES}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# multi-label data as a stream (--label-columns, --problem-type multi_label, or a label column of lists found when
# the stream is opened): its label lists would need their own scan, encoding and class counts; not supported yet
MULTI_LABEL_STREAM_MESSAGE = (
    "--streaming reads single-label data only: multi-label data (--label-columns, --problem-type multi_label, or a "
    "label column of lists) trains without --streaming"
)


def check_streaming(config: RunConfig) -> None:
    """What needs the whole dataset in memory is refused with --streaming (and --max-steps without it), naming the
    flag and what to do instead, before any data is read."""
    if not config.data.streaming:
        if config.optim.max_steps is not None:
            raise ConfigError(
                "--max-steps counts the optimizer steps of a --streaming run; without --streaming, set --epochs"
            )
        return
    refusals = [
        (
            config.transfer.case == AUTO_CASE,
            "--case auto runs trials over the data in memory; with --streaming name the case (--case "
            "small_similar, ...), or let `hftl advise` pick it on a sample (--max-train-samples)",
        ),
        (
            config.optim.lr == "auto",
            "--lr auto runs its range test over the train split in memory; with --streaming give --lr",
        ),
        (
            config.transfer.strategy == "contrastive",
            "--strategy contrastive pairs every training example with others in memory; few-shot data needs no "
            "--streaming: drop it",
        ),
        (
            bool(config.data.label_columns) or config.data.problem_type == "multi_label",
            MULTI_LABEL_STREAM_MESSAGE,
        ),
        (
            config.conservative.unfreeze_schedule is not None,
            "--unfreeze-schedule counts epochs, which a stream does not have; drop it with --streaming",
        ),
        (
            bool(config.speed.num_workers),
            "--num-workers: a stream is read in the training process, so that its position can be saved and "
            "resumed exactly; drop --num-workers (or set it to 0) with --streaming",
        ),
        (
            str(config.run.model or "").startswith(VECTORS_PREFIX),
            "--model vectors: builds its vocabulary from the whole train split; with --streaming use a "
            "transformers model, or drop --streaming",
        ),
    ]
    for refused, message in refusals:
        if refused:
            raise ConfigError(message)


def check_keys(values: Mapping[str, Any], source: str) -> None:
    """Reject settings that RunConfig does not have, naming the source and the closest valid name."""
    for key in values:
        if key not in FIELD_SECTION:
            close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown setting {key!r}{hint}; see `python -m hftl.train --help`")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML run config (same keys as the CLI flags, with underscores)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = load_untrusted_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot parse config file {path}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a run config must be a YAML mapping of setting: value")
    if not all(isinstance(key, str) for key in values):
        raise ConfigError(
            f"{path}: setting names must be words, got {[k for k in values if not isinstance(k, str)]}"
        )
    values = {key.replace("-", "_"): value for key, value in values.items()}
    check_keys(values, str(path))
    values = {key: _yaml_number(key, value) for key, value in values.items()}
    check_value_types(values, str(path))
    return values


def _yaml_number(key: str, value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``1e-2`` as a string (it wants ``1.0e-2``): a number setting takes it as written."""
    if isinstance(value, str) and float in _yaml_types(key):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def keyword_values(settings: Mapping[str, Any], source: str = "hftl.train") -> dict[str, Any]:
    """Python keywords as the settings' types take them (a path as text, a tuple as a list, a NumPy number as
    Python's), checked as a YAML file's are: ``"false"`` for a switch is refused, never taken as true."""
    values = {key: _plain(value) for key, value in settings.items()}
    check_keys(values, source)
    check_value_types(values, source)
    return values


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, int | float) else value


def check_value_types(values: Mapping[str, Any], source: str) -> None:
    """Each value of a YAML file (a run config, a task card's defaults) is of its setting's type: a mapping for
    --model or a number for --output-dir is one error naming the file and setting, not a traceback where it is used."""
    for key, value in values.items():
        expected = _yaml_types(key)
        if isinstance(value, str) and list in expected:  # one name for a list setting (regularizer: l2sp)
            continue
        if "parse" in _field(key).metadata:  # its own syntax, checked by its parser (--lr, --max-shard-size)
            continue
        if expected and (not isinstance(value, expected) or isinstance(value, bool) and bool not in expected):
            names = " or ".join(sorted({t.__name__.replace("NoneType", "null") for t in expected}))
            raise ConfigError(f"{source}: {key} must be {names}, got {str(value)[:60]!r}")
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{source}: {key} must be a list of names, got {str(value)[:60]!r}")


def _field(key: str) -> dataclasses.Field:
    return next(field for field in dataclasses.fields(FIELD_SECTION[key]) if field.name == key)


def _yaml_types(key: str) -> tuple[type, ...]:
    """The plain types a setting's field takes (``()`` where it takes a fixed set of words, checked by its section):
    a YAML value of another type (a mapping for --model, a number for --output-dir) is refused where it is read."""
    hint = typing.get_type_hints(FIELD_SECTION[key])[key]
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if any(
        typing.get_origin(kind) is typing.Literal or typing.get_origin(kind) is typing.Union for kind in kinds
    ):
        return ()
    plain = tuple(typing.get_origin(kind) or kind for kind in kinds)
    return plain + ((int,) if float in plain else ())


def build_parser(prog: str = "python -m hftl.train") -> argparse.ArgumentParser:
    """The CLI parser, derived from the settings sections, plus ``--config``. Imports neither torch nor
    transformers, so ``--help`` answers at once."""
    from hftl.cli_args import SettingsParser, add_settings

    parser = SettingsParser(
        prog=prog,
        description="Transfer a pretrained Hugging Face model to a new task. Every flag is also a YAML key "
        "(--config) and a keyword of hftl.train(); flags win over the file, the file over the task card.",
    )
    parser.add_argument(
        "--config", type=str, default=argparse.SUPPRESS, help="YAML file with settings (CLI flags win)."
    )
    for section in SECTIONS:
        add_settings(parser, section)
    return parser


def explicit_cli_values(
    argv: Sequence[str] | None = None, prog: str = "python -m hftl.train"
) -> dict[str, Any]:
    """Parse ``argv`` and keep only the flags the user actually gave, so lower layers can fill the rest."""
    from hftl.cli_args import parse_explicit

    return parse_explicit(build_parser(prog), argv)


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
        check_value_types(task.defaults, f"task card {task.name!r} defaults")
        layered = {**task.defaults, **layered}
    for key in ("model", "dataset"):
        if isinstance(layered.get(key), str):
            layered[key] = resolved_local_path(layered[key])
    return RunConfig(**layered)


def check_named_inputs(config: RunConfig, dataset: Any = None) -> None:
    """A run, compare or advice needs a model and data: from the flags, the task card's defaults or, in Python, a
    dataset in memory; one line naming the missing flag, before anything is read."""
    for flag, value in (
        ("--model", config.model),
        ("--dataset", config.dataset if dataset is None else dataset),
    ):
        if value is None or value == "":
            raise ConfigError(f"no {flag}: task {config.task!r} names no default for it; pass {flag}")


def resolved_local_path(name: str) -> str:
    """A ``--model``/``--dataset`` that names an existing local path, as its absolute path (``vectors:`` kept):
    ``./bert/``, ``bert`` and its absolute path are one model to everything a run records and fingerprints (a
    resume typed another way, or from another directory, is the same run). Hub ids and missing paths stay as given."""
    prefix = VECTORS_PREFIX if name.startswith(VECTORS_PREFIX) else ""
    if not name[len(prefix) :].strip():  # blank: refused by the settings, never read as the working directory
        return name
    path = Path(name[len(prefix) :]).expanduser()
    return f"{prefix}{path.resolve()}" if path.exists() else name
