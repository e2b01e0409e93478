"""The valid choices of the settings and the checks every section uses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from hftl.errors import ConfigError, unknown_choice

CASES = ("small_similar", "small_different", "large_similar", "large_different")
AUTO_CASE = "auto"  # the advisor picks one of CASES from the data (hftl.advisor)
REGULARIZERS = ("l2sp", "bss")
ADVISE_POOLINGS = ("auto", "cls", "mean")
STRATEGIES = ("head", "partial", "lora", "full", "contrastive")
INITS = ("auto", "pretrained", "scratch")  # auto: hftl.advisor.source_check decides
# how a new head reads the encoder (hftl.modeling.pooled); auto = a sentence-transformers folder's own, else pooler
POOLINGS = ("auto", "pooler", "cls", "mean", "max")
EVAL_STRATEGIES = ("epoch", "end")
MIXED_PRECISION = ("no", "fp16", "bf16")
QUANTIZE = ("4bit",)  # QLoRA: a 4-bit NF4 base under LoRA adapters (bitsandbytes, CUDA)
# what the labels are: auto reads it from the data (a column of lists, or --label-columns, is multi-label)
PROBLEM_TYPES = ("auto", "single_label", "multi_label")
# the names transformers' config.problem_type uses (its heads pick CrossEntropy or BCEWithLogits loss by them)
TRANSFORMERS_PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
}
AUTO_METRIC = "auto"  # --metric-for-best: accuracy, or f1_micro for multi-label data
# word vectors (--model vectors:PATH_OR_NAME)
VECTORS_PREFIX = "vectors:"
VECTOR_FORMATS = ("auto", "word2vec-bin", "word2vec-txt", "glove", "kv")
WORD_SPLITS = ("words", "whitespace")
OOV_INITS = ("random", "zeros", "mean")
VECTOR_POOLINGS = ("mean", "max")
VECTOR_ENCODERS = ("bag", "cnn")
# families whose body is a sentence encoder a contrastive stage can tune (hftl.training.contrastive)
CONTRASTIVE_FAMILIES = ("bert", "distilbert")


def contrastive_refusal(family: str) -> str:
    """Why ``--strategy contrastive`` does not apply to a family, and what to use instead."""
    if family == "word-vectors":
        why = (
            "word vectors are a lookup table averaged into a sentence, not a sentence encoder trained for "
            "similarity; use --strategy head or full"
        )
    else:
        why = (
            f"it tunes a text encoder on sentence pairs, and a {family} model reads images; use --strategy head, "
            "partial, lora or full"
        )
    return (
        "--strategy contrastive (SetFit-style few-shot) needs a transformer text encoder (BERT family, "
        f"DistilBERT): {why}"
    )


VECTORS_LORA_MESSAGE = (
    "LoRA is not meaningful for word vectors: the only pretrained block is the embedding matrix (a lookup table, "
    "no weight matrices to adapt). Use --strategy head (frozen vectors, trained classifier) or --strategy full "
    "(fine-tuned vectors)."
)

Case = Literal["small_similar", "small_different", "large_similar", "large_different", "auto"]
Strategy = Literal["head", "partial", "lora", "full", "contrastive"]


def head_width(head: str) -> int | None:
    """The hidden width of an ``mlp:N`` head, None for ``linear`` and ``auto`` (the family's own: linear, or
    --vectors-hidden-size for word vectors); a ConfigError for anything else."""
    if head in ("linear", "auto"):
        return None
    kind, _, width = head.partition(":")
    if kind != "mlp" or not width.isdigit() or int(width) < 1:
        raise ConfigError(
            f"--head {head!r}: use 'auto', 'linear' or 'mlp:N' with N a positive width, e.g. mlp:1024"
        )
    return int(width)


def check_head(head: str) -> None:
    head_width(head)


def check_choice(name: str, value: Any, valid: Sequence[str], optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in valid:
        raise unknown_choice(name, value, valid)


def check_positive(section: Any, *names: str, optional: bool = False) -> None:
    """Each named field is a positive integer (or None, when ``optional``)."""
    for name in names:
        value = getattr(section, name)
        if value is None and optional:
            continue
        check_positive_integer(name, value)


def check_positive_integer(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def split_names(values: list[str] | str) -> list[str]:
    """Names given as separate words, comma-separated, or both (``a b``, ``a,b``)."""
    items = [values] if isinstance(values, str) else values
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def check_not_negative(name: str, value: float | None) -> None:
    """A finite number >= 0 (None passes): a negative or NaN weight decay, clipping norm or penalty turns the
    step around or poisons it, and a run would still finish and save."""
    if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def check_rate(name: str, value: float | None) -> None:
    """A learning rate given as a number: finite and > 0 (None passes); inf trains to NaN and still saves."""
    if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def check_not_blank(section: Any, *names: str) -> None:
    """A name given as an empty string (an unset shell variable: ``--model "$MODEL"``) is refused, never read as
    the current directory."""
    for name in names:
        value = getattr(section, name)
        if isinstance(value, str) and not value.strip():
            raise ConfigError(
                f"--{name.replace('_', '-')} is empty (an unset shell variable?); give it a value or leave it out"
            )


def check_range(
    name: str,
    value: float | None,
    low: float,
    high: float,
    *,
    closed_low: bool = True,
    closed_high: bool = True,
) -> None:
    """``value`` lies in the interval (None passes); the message writes the interval as maths does."""
    if value is None:
        return
    above = value >= low if closed_low else value > low
    below = value <= high if closed_high else value < high
    if not (above and below):
        interval = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
        raise ConfigError(f"{name} must be in {interval}, got {value}")


def check_repo_id(repo_id: str) -> str:
    """``owner/name`` or ``name``, as the Hub accepts it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ConfigError(f"invalid Hub repo id {repo_id!r}: {error}") from error
    return repo_id


AUTO_LR = "auto"
# the learning-rate schedules a run can build from (optimizer, warmup, total steps) alone: transformers' others need
# a metric each step (reduce_lr_on_plateau) or settings hftl has no flag for (warmup_stable_decay, cosine_with_min_lr)
SCHEDULERS = (
    "linear",
    "cosine",
    "constant",
    "constant_with_warmup",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
)


def learning_rate(value: str | float) -> float | str:
    """``--lr``: a positive number, or ``auto`` (an LR range test picks it)."""
    if isinstance(value, str) and value.strip().lower() == AUTO_LR:
        return AUTO_LR
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"lr must be a positive number or 'auto', got {value!r}") from error
    check_rate("lr", number)
    return number


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def shard_size(value: str | int) -> str | int:
    """``--max-shard-size``: a byte count or a size with a unit (500MB, 5GB, 2GiB), as ``save_pretrained`` reads
    it; returned as given, checked here without importing transformers."""
    text = str(value).strip().upper().replace(" ", "")
    number = text.rstrip("KMGIB")
    unit = text[len(number) :]
    try:
        size = float(number) * _SIZE_UNITS[unit]
    except (KeyError, ValueError):
        size = 0
    if not size >= 1:
        raise ConfigError(f"--max-shard-size {value!r}: give a size such as 500MB, 5GB or 2GiB (or bytes)")
    # bytes as a number: save_pretrained reads "1000000" as a malformed size
    return int(text) if text.isdigit() else str(value).strip()
