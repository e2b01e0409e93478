"""hftl: transfer learning on Hugging Face models, the four classic cases as one command or one call.

>>> import hftl
>>> result = hftl.train(task="image", case="small_similar", model="google/vit-base-patch16-224-in21k",
...                     dataset="AI-Lab-Makerere/beans", output_dir="runs/beans")  # doctest: +SKIP
>>> result.metrics["best"]  # doctest: +SKIP

The package is lazy: ``import hftl`` loads nothing heavy; each public name imports its module on first use
(``hftl.train`` imports the run recipe, torch and transformers; ``hftl.CASES`` only the settings).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # settings, tasks, errors (light)
    "CASES": "hftl.settings",
    "STRATEGIES": "hftl.settings",
    "RunConfig": "hftl.config",
    "Task": "hftl.tasks",
    "available_tasks": "hftl.tasks",
    "get_task": "hftl.tasks",
    "register_task": "hftl.tasks",
    "ConfigError": "hftl.errors",
    "DataError": "hftl.errors",
    "HftlError": "hftl.errors",
    "ModelError": "hftl.errors",
    "OutputError": "hftl.errors",
    # running and comparing
    "RunResult": "hftl.recipes.run",
    "train": "hftl.recipes.run",
    "CompareSettings": "hftl.recipes.compare",
    "compare": "hftl.recipes.compare",
    "run_demo": "hftl.recipes.demo",
    # the transfer plan
    "CASE_RULES": "hftl.transfer.cases",
    "make_plan": "hftl.transfer.cases",
    "Block": "hftl.transfer.plan",
    "ConservativeSpec": "hftl.transfer.plan",
    "TransferPlan": "hftl.transfer.plan",
    "apply_plan": "hftl.transfer.apply",
    "count_parameters": "hftl.transfer.apply",
    # backbones and sources
    "Backbone": "hftl.backbones",
    "available_backbones": "hftl.backbones",
    "backbone_for": "hftl.backbones",
    "register_backbone": "hftl.backbones",
    "Cut": "hftl.backbones.base",
    "register_source": "hftl.sources.registry",
    # the advisor
    "Advice": "hftl.advisor.decision",
    "advise": "hftl.advisor.advise",
    "h_score": "hftl.advisor.scores",
    "leep": "hftl.advisor.scores",
    "logme": "hftl.advisor.scores",
    # training helpers
    "find_cut": "hftl.training.feature_cache",
    "use_feature_cache": "hftl.training.feature_cache",
    "LengthGroupedSampler": "hftl.data.sampling",
    "ThroughputMeter": "hftl.training.throughput",
    # outputs
    "build_card": "hftl.outputs.card",
    "write_cards": "hftl.outputs.card",
    "PushError": "hftl.outputs.hub",
    "PushResult": "hftl.outputs.hub",
    "push": "hftl.outputs.hub",
    "load": "hftl.outputs.loading",
    "export": "hftl.outputs.onnx_export",
    "ExportResult": "hftl.outputs.onnx_export",
    # inference
    "predict": "hftl.inference.predict",
    "embed": "hftl.inference.embed",
    "similar": "hftl.inference.embed",
    # word vectors
    "WordVectorsConfig": "hftl.modeling.word_vectors",
    "WordVectorsForSequenceClassification": "hftl.modeling.word_vectors",
    "WordVectorsModel": "hftl.modeling.word_vectors",
    "register_auto_classes": "hftl.modeling.auto",
    "OOVReport": "hftl.sources.word_vectors",
    "build_word_tokenizer": "hftl.sources.word_vectors",
    "embedding_layer": "hftl.sources.word_vectors",
    "embedding_matrix": "hftl.sources.word_vectors",
    "load_vectors": "hftl.sources.vector_files",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hftl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    if (
        name != "train"
    ):  # `hftl.train` is also a module (python -m hftl.train); it stays callable (hftl/train.py)
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from hftl.recipes.run import RunResult, train  # noqa: F401
