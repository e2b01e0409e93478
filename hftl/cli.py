"""The ``hftl`` console script: ``hftl train|plan|tasks``. Each subcommand parses its flags and calls the API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from hftl.errors import HftlError


def _train(argv: Sequence[str]) -> int:
    from hftl.train import main as train_main

    return train_main(argv)


def _plan(argv: Sequence[str]) -> int:
    """Print the transfer plan a run would follow, from the model's config alone (no weights, no data)."""
    from hftl.backbones import backbone_for
    from hftl.cases import make_plan
    from hftl.config import explicit_cli_values, resolve_config
    from hftl.models import build_meta_model
    from hftl.run import quiet_library_logs
    from hftl.tasks import get_task

    quiet_library_logs()
    config = resolve_config(explicit_cli_values(argv))
    model = build_meta_model(get_task(config.task), config)
    backbone = backbone_for(model.config)
    plan = make_plan(config, model, backbone)
    print(plan.render())
    print(_cache_line(config, plan, backbone, model))
    return 0


def _cache_line(config: Any, plan: Any, backbone: Any, model: Any) -> str:
    """Whether a run with these settings would train on cached frozen features (issue 5)."""
    from hftl.features import find_cut

    if not config.feature_cache:
        return "  feature cache: off (--no-feature-cache)"
    cut, reason = find_cut(plan, backbone, model)
    if cut is None:
        return f"  feature cache: not used ({reason})"
    return f"  feature cache: the frozen prefix runs once; the rest trains on stored {cut.describe(backbone.layer_word)}"


def _tasks(argv: Sequence[str]) -> int:
    from hftl.backbones import available_backbones
    from hftl.config import CASES, STRATEGIES
    from hftl.tasks import available_tasks, get_task

    argparse.ArgumentParser(
        prog="hftl tasks", description="List tasks, families, cases, strategies."
    ).parse_args(argv)
    for name in available_tasks():
        task = get_task(name)
        print(
            f"task {name}: {task.description} (default model {task.defaults.get('model')}, "
            f"dataset {task.defaults.get('dataset')})"
        )
    for family, types in available_backbones().items():
        print(f"family {family}: {', '.join(types)}")
    print(f"cases: {', '.join(CASES)}")
    print(f"strategies: {', '.join(STRATEGIES)}")
    return 0


COMMANDS = {
    "train": (_train, "train a transfer setup (same flags as python -m hftl.train)"),
    "plan": (_plan, "print the transfer plan for --task/--case/--model without training"),
    "tasks": (_tasks, "list tasks, backbone families, cases and strategies"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = ["usage: hftl COMMAND [flags]", "", "commands:"]
        lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in COMMANDS.items()]
        print("\n".join(lines), file=sys.stdout if not argv or argv[0] in ("-h", "--help") else sys.stderr)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    try:
        return COMMANDS[command][0](rest)
    except HftlError as error:
        print(f"hftl: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
