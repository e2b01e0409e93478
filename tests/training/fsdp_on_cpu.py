"""Run ``hftl.train`` under FSDP2 in CPU processes (gloo), for tests: ``torchrun --nproc_per_node 2 fsdp_on_cpu.py
RUNS_JSON``, RUNS_JSON being a list of ``hftl.train`` keyword dicts run one after the other.

Accelerate turns an FSDP config into DDP unless it runs on 2+ GPUs (hftl refuses that, ``hftl.training.engines``).
torch's FSDP2 itself runs on CPU with gloo, so this script builds the FSDP plugin from configs/accelerate/fsdp.yaml
the way ``accelerate launch`` does (its own parser and environment), and switches the Accelerator hftl makes over to
it. Everything after that (wrapping, ``save_state``, ``load_state``, ``get_state_dict``) is Accelerate's and
torch's own code. Each process writes ``fsdp-rank{R}.json`` into every run's OUTPUT_DIR: how its model was wrapped.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[2]


def fsdp_environment(config_file: Path) -> dict[str, str]:
    """The FSDP_* variables ``accelerate launch --config_file CONFIG`` would hand its processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "hftl.train"])
    args, _, _ = _validate_launch_command(args)
    return {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith("FSDP_")}


def on_fsdp(make, environment: dict[str, str]):
    """Wrap ``make_accelerator``: the Accelerator it returns runs FSDP2 with the config's plugin."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    def make_fsdp_accelerator(config):
        accelerator = make(config)
        with mock.patch.dict(os.environ, environment):
            plugin = FullyShardedDataParallelPlugin()
        PartialState().distributed_type = DistributedType.FSDP
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
        return accelerator

    return make_fsdp_accelerator


def record_wrapping(fit):
    """Wrap ``fit``: note which modules became FSDP units and whether the parameters are sharded."""

    def fit_and_record(model, inputs, config, *args, **kwargs):
        result = fit(model, inputs, config, *args, **kwargs)
        from torch.distributed.fsdp import FSDPModule

        units = sorted({type(m).__name__ for m in result.model.modules() if isinstance(m, FSDPModule)})
        sharded = [n for n, p in result.model.named_parameters() if hasattr(p, "to_local")]
        local = sum(p.to_local().numel() for p in result.model.parameters() if hasattr(p, "to_local"))
        total = sum(p.numel() for p in result.model.parameters())
        record = {"units": units, "sharded": len(sharded), "local_numel": local, "numel": total}
        rank = os.environ.get("RANK", "0")
        (Path(config.output_dir) / f"fsdp-rank{rank}.json").write_text(json.dumps(record))
        return result

    return fit_and_record


def main() -> None:
    import hftl
    import hftl.recipes.run as recipe

    recipe.make_accelerator = on_fsdp(
        recipe.make_accelerator, fsdp_environment(REPO / "configs/accelerate/fsdp.yaml")
    )
    recipe.fit = record_wrapping(recipe.fit)
    # several runs in one process share its process group: a run keeps it for the next (hftl.recipes.run.end_run)
    for settings in json.loads(sys.argv[1]):
        hftl.train(**settings)


if __name__ == "__main__":
    main()
