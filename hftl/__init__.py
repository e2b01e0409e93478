"""hftl: transfer learning on Hugging Face models, the four classic cases as one command or one call.

>>> import hftl
>>> result = hftl.train(task="image", case="small_similar", model="google/vit-base-patch16-224-in21k",
...                     dataset="AI-Lab-Makerere/beans", output_dir="runs/beans")  # doctest: +SKIP
>>> result.metrics["best"]  # doctest: +SKIP
"""

from hftl.advisor import Advice, advise
from hftl.backbones import Backbone, available_backbones, backbone_for, register_backbone
from hftl.cases import CASE_RULES, make_plan
from hftl.compare import CompareSettings, compare
from hftl.config import CASES, STRATEGIES, RunConfig
from hftl.errors import ConfigError, DataError, HftlError, ModelError
from hftl.plan import Block, ConservativeSpec, TransferPlan
from hftl.run import RunResult, run, train
from hftl.tasks import Task, available_tasks, get_task, register_task
from hftl.transfer import apply_plan, count_parameters
from hftl.transferability import h_score, leep, logme

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
    "DataError",
    "HftlError",
    "ModelError",
    "RunConfig",
    "RunResult",
    "STRATEGIES",
    "Task",
    "TransferPlan",
    "advise",
    "apply_plan",
    "available_backbones",
    "available_tasks",
    "backbone_for",
    "compare",
    "count_parameters",
    "get_task",
    "h_score",
    "leep",
    "logme",
    "make_plan",
    "register_backbone",
    "register_task",
    "run",
    "train",
]
