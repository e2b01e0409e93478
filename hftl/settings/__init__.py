"""Run settings in sections, one dataclass per concern, each validated where it is defined.

Every field is a CLI flag (``--batch-size`` or ``--batch_size``), a YAML key and a keyword of ``hftl.train`` with
the same name; ``hftl.config.RunConfig`` joins the sections and checks what spans several of them. Field help is
written once, in ``metadata["help"]``, and the command line is derived from it (``hftl.cli_args``). Nothing here
imports from hftl but its errors: features import their settings, never the other way round, and reading the
settings (``hftl train --help``) imports neither torch nor transformers.
"""

from dataclasses import fields

from hftl.settings.advisor import AdvisorSettings
from hftl.settings.choices import (
    ADVISE_POOLINGS,
    AUTO_CASE,
    AUTO_METRIC,
    CASES,
    INITS,
    MIXED_PRECISION,
    OOV_INITS,
    POOLINGS,
    PROBLEM_TYPES,
    REGULARIZERS,
    STRATEGIES,
    VECTOR_ENCODERS,
    VECTOR_FORMATS,
    VECTOR_POOLINGS,
    VECTORS_LORA_MESSAGE,
    VECTORS_PREFIX,
    WORD_SPLITS,
    Case,
    Strategy,
    check_repo_id,
    head_width,
)
from hftl.settings.data import DataSettings, VectorsSettings
from hftl.settings.run import HubSettings, RunSettings, TransferSettings
from hftl.settings.training import ConservativeSettings, OptimSettings, SpeedSettings

SECTIONS: tuple[type, ...] = (
    RunSettings,
    TransferSettings,
    DataSettings,
    OptimSettings,
    ConservativeSettings,
    VectorsSettings,
    AdvisorSettings,
    SpeedSettings,
    HubSettings,
)
FIELD_SECTION: dict[str, type] = {f.name: section for section in SECTIONS for f in fields(section)}

__all__ = [
    "ADVISE_POOLINGS",
    "AUTO_CASE",
    "AUTO_METRIC",
    "CASES",
    "FIELD_SECTION",
    "INITS",
    "MIXED_PRECISION",
    "OOV_INITS",
    "PROBLEM_TYPES",
    "REGULARIZERS",
    "SECTIONS",
    "STRATEGIES",
    "VECTORS_LORA_MESSAGE",
    "VECTORS_PREFIX",
    "VECTOR_ENCODERS",
    "VECTOR_FORMATS",
    "VECTOR_POOLINGS",
    "POOLINGS",
    "head_width",
    "WORD_SPLITS",
    "AdvisorSettings",
    "Case",
    "ConservativeSettings",
    "DataSettings",
    "HubSettings",
    "OptimSettings",
    "RunSettings",
    "SpeedSettings",
    "Strategy",
    "TransferSettings",
    "VectorsSettings",
    "check_repo_id",
]
