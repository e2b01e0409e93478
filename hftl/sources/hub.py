"""The Hub/local source (the fallback): a Hub id or a local ``save_pretrained`` folder, loaded with transformers'
Auto classes, with errors that say what to do offline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, PretrainedConfig, PreTrainedModel

from hftl.backbones.base import trainable_architecture
from hftl.errors import HftlError, ModelError, first_line
from hftl.modeling.pooled import register_for_source
from hftl.modeling.timm_nets import TIMM_MODEL_TYPE, prepare_config, standard_processor
from hftl.sources.pooling import hub_head
from hftl.sources.quantization import quantized_loading
from hftl.sources.registry import label_kwargs, local_or_hub, register_source
from hftl.sources.safety import pickled_weights_refused

if TYPE_CHECKING:
    from hftl.config import RunConfig
    from hftl.tasks import Task


# the JSON files a save_pretrained folder may hold (model, tokenizer, image processor): named when one is damaged
SAVED_JSON = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "model.safetensors.index.json",
)


def _loading_error(name: str, error: Exception) -> ModelError:
    cause = f"{type(error).__name__}: {first_line(error)}"
    folder = Path(name).expanduser()
    if folder.is_dir():
        damaged = damaged_file(folder)
        if damaged:
            return ModelError(
                f"could not load model from the folder {name} ({damaged}): a file there is damaged or cut short. "
                "Copy the folder again, or re-save the model with save_pretrained."
            )
        wrong_task = "Unrecognized configuration class" in str(error)
        return ModelError(
            f"could not load model from the folder {name} ({cause}): "
            + (
                "its architecture has no head for this --task (a text model given --task image, or the reverse?)"
                if wrong_task
                else "check the settings it names, and that the folder is what save_pretrained writes"
            )
        )
    return ModelError(
        f"could not load model {name!r}: it is not a local folder and the Hugging Face Hub could not provide it "
        f"({cause}). Offline, pass a local save_pretrained folder with --model."
    )


def damaged_file(folder: Path) -> str | None:
    """Which of a saved model's files in ``folder`` is damaged, and how: a JSON file (``SAVED_JSON``) that is not
    JSON, or safetensors weights whose header does not read (only headers are read); None if none is."""
    from safetensors import safe_open

    for name in SAVED_JSON:
        path = folder / name
        if path.is_file():
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                return f"{name} is not valid JSON: {first_line(error)}"
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except (OSError, SafetensorError) as error:
            return f"{path.name} does not read: {first_line(error)}"
    return None


@contextmanager
def _hub_errors_named(name: str) -> Iterator[None]:
    """transformers' OSError/ValueError for a model it cannot load (offline, a wrong id, a damaged file) and
    safetensors' error for cut-short weights as one ModelError; hftl's own errors (a refused pickle) pass through."""
    try:
        yield
    except HftlError:
        raise
    except (OSError, ValueError, SafetensorError) as error:
        raise _loading_error(name, error) from error


def load_model_config(config: RunConfig, labels: list[str] | None = None) -> PretrainedConfig:
    """The architecture config, with the label names of the target dataset when given, and the run's pooling and
    head (a pooled config when they are not the family's own)."""
    source = local_or_hub(config.model)
    register_for_source(source, revision=config.revision)
    with _hub_errors_named(config.model):
        model_config = AutoConfig.from_pretrained(
            source, revision=config.revision, trust_remote_code=config.trust_remote_code
        )
    prepare_config(model_config)
    trainable_architecture(model_config)
    if labels is not None:
        for key, value in label_kwargs(labels, config.problem_type).items():
            setattr(model_config, key, value)
    return model_config if model_config.model_type == TIMM_MODEL_TYPE else hub_head(config, model_config)


class HubSource:
    """Hub ids and local folders: every name no other source claims."""

    name = "hub"

    def matches(self, model: str) -> bool:
        return True

    def check(self, model: str) -> str:
        return local_or_hub(model)

    def build_model(
        self, task: Task, config: RunConfig, labels: list[str], processor: Any = None
    ) -> PreTrainedModel:
        try:
            return self._build_model(task, config, labels)
        except (MemoryError, RuntimeError) as error:
            # the CPU allocator refusing what the config asks for ("can't allocate memory: you tried to allocate N
            # bytes"); a GPU's out-of-memory (a busy card, a large model) is not a config's fault and passes through
            cpu_refusal = isinstance(error, MemoryError) or "DefaultCPUAllocator" in str(error)
            if not cpu_refusal:
                raise
            raise ModelError(
                f"building {config.model} ran out of memory ({first_line(error)}): its config.json may ask for "
                "more weights than this machine holds; check its sizes (hidden_size, num_hidden_layers, "
                "vocab_size: `hftl plan` prints the parameter count without allocating them)"
            ) from error

    def _build_model(self, task: Task, config: RunConfig, labels: list[str]) -> PreTrainedModel:
        model_class = task.model_class()
        model_config = load_model_config(config, labels)
        # the attention kernel (sdpa, eager, ...); transformers picks SDPA where supported when not given
        kernel = {"attn_implementation": config.attn_implementation} if config.attn_implementation else {}
        if config.init == "scratch":
            with _hub_errors_named(config.model):
                return model_class.from_config(
                    model_config, trust_remote_code=config.trust_remote_code, **kernel
                )
        # a pickle torch refuses is named as such (a ModelError, which the Hub-error wrapping below must not take)
        with pickled_weights_refused(config.model), _hub_errors_named(config.model):
            return model_class.from_pretrained(
                local_or_hub(config.model),
                config=model_config,
                revision=config.revision,
                trust_remote_code=config.trust_remote_code,
                ignore_mismatched_sizes=True,
                **kernel,
                # --quantize 4bit: the NF4 base of QLoRA, the head left in full precision
                **quantized_loading(config, model_config),
            )

    def build_meta_model(
        self, task: Task, config: RunConfig, labels: list[str] | None = None
    ) -> PreTrainedModel:
        model_config = load_model_config(config, labels)
        with torch.device("meta"), _hub_errors_named(config.model):
            return task.model_class().from_config(model_config, trust_remote_code=config.trust_remote_code)

    def load_processor(self, task: Task, config: RunConfig, splits: Any = None) -> Any:
        source = local_or_hub(config.model)
        loader = AutoImageProcessor if task.modality == "image" else AutoTokenizer
        try:
            processor = loader.from_pretrained(
                source, revision=config.revision, trust_remote_code=config.trust_remote_code
            )
            return standard_processor(processor)  # timm Hub repos: the equivalent standard processor
        except (OSError, ValueError) as error:
            folder = Path(config.model).expanduser()
            damaged = damaged_file(folder) if folder.is_dir() else None
            raise ModelError(
                f"could not load the {'image processor' if task.modality == 'image' else 'tokenizer'} of "
                f"{config.model!r} ({damaged or f'{type(error).__name__}: {first_line(error)}'}); a local model "
                "folder needs it saved beside the weights (processor.save_pretrained(folder)), whole"
            ) from error


SOURCE = register_source(HubSource(), fallback=True)
