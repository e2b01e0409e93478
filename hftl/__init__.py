"""hftl: transfer learning on Hugging Face models, the four classic cases as one command or one call.

>>> import hftl
>>> result = hftl.train(task="image", case="small_similar", model="google/vit-base-patch16-224-in21k",
...                     dataset="AI-Lab-Makerere/beans", output_dir="runs/beans")  # doctest: +SKIP
>>> result.metrics["best"]  # doctest: +SKIP
"""

from hftl.advisor import Advice, advise
from hftl.backbones import Backbone, available_backbones, backbone_for, register_backbone
from hftl.backbones.base import Cut
from hftl.card import build_card, write_cards
from hftl.cases import CASE_RULES, make_plan
from hftl.compare import CompareSettings, compare
from hftl.config import CASES, STRATEGIES, RunConfig
from hftl.demo import run_demo
from hftl.embed import embed, similar
from hftl.errors import ConfigError, DataError, HftlError, ModelError
from hftl.features import find_cut, use_feature_cache
from hftl.hub import PushError, PushResult, push
from hftl.loading import load
from hftl.modeling_vectors import WordVectorsConfig, WordVectorsForSequenceClassification, WordVectorsModel
from hftl.plan import Block, ConservativeSpec, TransferPlan
from hftl.predict import predict
from hftl.run import RunResult, train
from hftl.sampling import LengthGroupedSampler
from hftl.tasks import Task, available_tasks, get_task, register_task
from hftl.throughput import ThroughputMeter
from hftl.transfer import apply_plan, count_parameters
from hftl.transferability import h_score, leep, logme
from hftl.vectors import OOVReport, build_word_tokenizer, embedding_layer, embedding_matrix, load_vectors

__version__ = "0.1.0"

__all__ = [
    "Advice",
    "Backbone",
    "Block",
    "CASES",
    "CASE_RULES",
    "CompareSettings",
    "ConservativeSpec",
    "ConfigError",
    "Cut",
    "DataError",
    "HftlError",
    "LengthGroupedSampler",
    "ModelError",
    "PushError",
    "PushResult",
    "RunConfig",
    "RunResult",
    "STRATEGIES",
    "Task",
    "ThroughputMeter",
    "TransferPlan",
    "advise",
    "apply_plan",
    "available_backbones",
    "available_tasks",
    "backbone_for",
    "build_card",
    "compare",
    "count_parameters",
    "find_cut",
    "get_task",
    "load",
    "h_score",
    "leep",
    "logme",
    "make_plan",
    "push",
    "register_backbone",
    "register_task",
    "train",
    "write_cards",
    # issue 3
    "OOVReport",
    "WordVectorsConfig",
    "WordVectorsForSequenceClassification",
    "WordVectorsModel",
    "build_word_tokenizer",
    "embed",
    "embedding_layer",
    "embedding_matrix",
    "load_vectors",
    "predict",
    "similar",
    # issue 5
    "use_feature_cache",
    # issue 8
    "run_demo",
]
