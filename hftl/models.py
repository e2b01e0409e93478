"""Loading models and their processors from the Hub or a local folder, with errors that say what to do."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, PretrainedConfig, PreTrainedModel

from hftl import timm_source, vector_source
from hftl.config import RunConfig
from hftl.errors import ModelError
from hftl.tasks import Task
from hftl.vector_source import check_vectors_source, is_vectors_model

if TYPE_CHECKING:
    from hftl.data import Splits


def looks_like_path(name: str) -> bool:
    """True for names that can only be a local path (not a Hub ``owner/name`` id)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def check_source(name: str, what: str = "model") -> str:
    """Return ``name`` if it is an existing local path or plausibly a Hub id; fail clearly for a missing path."""
    if is_vectors_model(name):
        return check_vectors_source(name)
    if timm_source.is_timm_name(name):
        timm_source.timm_name(name)  # timm installed and the architecture known
        return name
    if Path(name).expanduser().exists():
        # absolute, so that what is recorded (adapter_config's base model, cards) works from any directory
        return str(Path(name).expanduser().resolve())
    if looks_like_path(name):
        raise ModelError(f"{what} path does not exist: {name}")
    return name


def _loading_error(name: str, error: Exception) -> ModelError:
    return ModelError(
        f"could not load model {name!r}: it is not a local folder and the Hugging Face Hub could not provide it "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Offline, pass a local "
        "save_pretrained folder with --model."
    )


def load_model_config(task: Task, config: RunConfig, labels: list[str] | None = None) -> PretrainedConfig:
    """The architecture config, with the label names of the target dataset when given."""
    source = check_source(config.model)
    try:
        model_config = AutoConfig.from_pretrained(
            source, revision=config.revision, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise _loading_error(config.model, error) from error
    timm_source.prepare_config(model_config)
    if labels is not None:
        for key, value in label_kwargs(labels).items():
            setattr(model_config, key, value)
    return model_config


def label_kwargs(labels: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def build_model(task: Task, config: RunConfig, labels: list[str], processor: Any = None) -> PreTrainedModel:
    """The task model sized for ``labels``: pretrained weights (head resized) or random weights (``--init scratch``).
    Word vectors (``vectors:...``) are aligned to ``processor``, the vocabulary built from the training split."""
    if is_vectors_model(config.model):
        return vector_source.build_model(config, labels, processor)
    if timm_source.is_timm_name(config.model):
        return timm_source.build_model(task, config, labels)
    model_class = task.model_class()
    model_config = load_model_config(task, config, labels)
    # the attention kernel (sdpa, eager, ...); transformers picks SDPA where supported when not given
    kernel = {"attn_implementation": config.attn_implementation} if config.attn_implementation else {}
    if config.init == "scratch":
        return model_class.from_config(model_config, trust_remote_code=config.trust_remote_code, **kernel)
    try:
        return model_class.from_pretrained(
            check_source(config.model),
            config=model_config,
            revision=config.revision,
            trust_remote_code=config.trust_remote_code,
            ignore_mismatched_sizes=True,
            **kernel,
        )
    except (OSError, ValueError) as error:
        raise _loading_error(config.model, error) from error


def build_meta_model(task: Task, config: RunConfig, labels: list[str] | None = None) -> PreTrainedModel:
    """The architecture without weights (meta device): enough to make and print a plan instantly."""
    if is_vectors_model(config.model):
        return vector_source.build_meta_model(config, labels)
    if timm_source.is_timm_name(config.model):
        return timm_source.build_meta_model(task, config, labels)
    model_config = load_model_config(task, config, labels)
    with torch.device("meta"):
        return task.model_class().from_config(model_config, trust_remote_code=config.trust_remote_code)


def load_processor(task: Task, config: RunConfig, splits: Splits | None = None) -> Any:
    """The image processor or tokenizer saved with the model; for word vectors, a word tokenizer built from
    ``splits.train``."""
    if is_vectors_model(config.model):
        return vector_source.build_tokenizer(task, config, splits)
    if timm_source.is_timm_name(config.model):
        return timm_source.load_processor(config)
    source = check_source(config.model)
    loader = AutoImageProcessor if task.modality == "image" else AutoTokenizer
    try:
        processor = loader.from_pretrained(
            source, revision=config.revision, trust_remote_code=config.trust_remote_code
        )
        return timm_source.standard_processor(processor)  # timm Hub repos: the equivalent standard processor
    except (OSError, ValueError) as error:
        raise ModelError(
            f"could not load the {'image processor' if task.modality == 'image' else 'tokenizer'} of "
            f"{config.model!r} ({type(error).__name__}); a local model folder needs it saved beside the weights "
            "(processor.save_pretrained(folder))"
        ) from error
