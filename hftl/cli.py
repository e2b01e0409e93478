"""The ``hftl`` console script: ``hftl train|plan|tasks``. Each subcommand parses its flags and calls the API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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
    print(make_plan(config, model, backbone).render())
    return 0


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
    print(f"cases: {', '.join(CASES)}, auto (the advisor picks one from the data)")
    print(f"strategies: {', '.join(STRATEGIES)}")
    return 0


def _advise(argv: Sequence[str]) -> int:
    """Measure dataset size and feature similarity, and say which case (and cut) to use; rank --model a,b,c."""
    from hftl.advisor import advise, render_ranking, write_advice
    from hftl.config import AUTO_CASE, explicit_cli_values, resolve_config
    from hftl.run import quiet_library_logs

    quiet_library_logs()
    values = explicit_cli_values(argv)
    values.setdefault("case", AUTO_CASE)
    if "output_dir" not in values and values.get("task"):
        values["output_dir"] = f"runs/{Path(values['task']).stem}-advice"
    config = resolve_config(values)
    advices = advise(config)
    for advice in advices:
        print(advice.render())
    if len(advices) > 1:
        print(render_ranking(advices))
    json_path, md_path = write_advice(config.output_dir, advices)
    print(f"Wrote {json_path} and {md_path}")
    return 0


def _compare(argv: Sequence[str]) -> int:
    """Train the transfer setup and a from-scratch baseline; report start, slope and asymptote benefits."""
    from transformers import HfArgumentParser

    from hftl.compare import CompareSettings, compare
    from hftl.config import AUTO_CASE, build_parser, explicit_cli_values, resolve_config
    from hftl.run import quiet_library_logs

    own = HfArgumentParser(
        CompareSettings,
        prog="hftl compare",
        description="Transfer vs from-scratch learning curves. Also takes every flag of `python -m hftl.train`.",
    )
    if "-h" in argv or "--help" in argv:
        own.print_help()
        print("\nrun settings (as for python -m hftl.train):")
        build_parser().print_help()
        return 0
    settings, rest = own.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
    quiet_library_logs()
    values = explicit_cli_values(rest)
    if "output_dir" not in values and values.get("task"):
        values["output_dir"] = f"runs/{Path(values['task']).stem}-compare"
    values.setdefault("case", AUTO_CASE)  # "the chosen transfer setup": the advisor's, unless --case is given
    config = resolve_config(values)
    report = compare(config, settings)
    for size in report["sizes"]:
        gain = size["benefit"]
        print(
            f"{size['train_examples']} examples: start {gain['start']:+.4f}, area under curve {gain['auc']:+.4f}, "
            f"best {gain['asymptote']:+.4f} (transfer minus scratch, {report['metric']})"
        )
    print(
        f"Wrote {Path(resolve_config(values).output_dir) / 'report.md'} (and report.json, report.html, plots)"
    )
    return 0


COMMANDS = {
    "train": (_train, "train a transfer setup (same flags as python -m hftl.train)"),
    "plan": (_plan, "print the transfer plan for --task/--case/--model without training"),
    "tasks": (_tasks, "list tasks, backbone families, cases and strategies"),
    "advise": (_advise, "pick the case (and cut) from the data; rank candidate models (--model a,b,c)"),
    "compare": (_compare, "transfer vs from-scratch learning curves: start, slope and asymptote benefits"),
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
