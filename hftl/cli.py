"""The ``hftl`` console script: ``hftl train|plan|tasks|push``. Each subcommand parses its flags and calls the API."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hftl.cli_args import positive_int
from hftl.errors import exit_code_of


def _train(argv: Sequence[str]) -> int:
    from hftl.train import main as train_main

    return train_main(argv, prog="hftl train")


def _plan(argv: Sequence[str]) -> int:
    """Print the transfer plan a run would follow, from the model's config alone (no weights, no data)."""
    from hftl.config import explicit_cli_values, resolve_config

    config = resolve_config(explicit_cli_values(argv, prog="hftl plan"))  # --help ends here, before torch
    from hftl.backbones import backbone_for
    from hftl.recipes.run import quiet_library_logs
    from hftl.sources.registry import build_meta_model
    from hftl.tasks import get_task
    from hftl.transfer.apply import shape_to_plan
    from hftl.transfer.cases import make_plan, measure_blocks

    quiet_library_logs()
    model = build_meta_model(get_task(config.task), config)
    backbone = backbone_for(model.config)
    plan = make_plan(config, model, backbone)
    shape_to_plan(plan, model, backbone)  # the cut, as a run makes it: the head's size after it
    plan = measure_blocks(plan, model)
    print(plan.render())
    print(_cache_line(config, plan, backbone, model))
    return 0


def _cache_line(config: Any, plan: Any, backbone: Any, model: Any) -> str:
    """Whether a run with these settings would train on cached frozen features."""
    from hftl.training.feature_cache import find_cut

    if not config.feature_cache:
        return "  feature cache: off (--no-feature-cache)"
    cut, reason = find_cut(plan, backbone, model)
    if cut is None:
        return f"  feature cache: not used ({reason})"
    return f"  feature cache: the frozen prefix runs once; the rest trains on stored {cut.describe(backbone.layer_word)}"


def _tasks(argv: Sequence[str]) -> int:
    from hftl.backbones import available_backbones
    from hftl.settings import CASES, STRATEGIES
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


def _push(argv: Sequence[str]) -> int:
    """Publish an output folder to the Hub; exit 1 (with the retry command) when the upload fails."""
    parser = argparse.ArgumentParser(
        prog="hftl push",
        description="Publish an hftl output folder to the Hugging Face Hub: the LoRA adapter (with its new head) "
        "or the full model, with its processor/tokenizer and a model card. Uses your `hf auth login` token or "
        "HF_TOKEN.",
    )
    parser.add_argument("output_dir", help="the run's --output-dir (or the Hub id of a repo pushed by hftl)")
    parser.add_argument("--repo-id", required=True, help="target repository, owner/name")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--adapter-only",
        dest="mode",
        action="store_const",
        const="adapter",
        help="LoRA runs: the adapter (default)",
    )
    what.add_argument(
        "--merged", dest="mode", action="store_const", const="merged", help="LoRA runs: the merged model"
    )
    parser.add_argument("--commit-message", default=None, help="message of the Hub commit")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the files that would be sent; upload nothing"
    )
    args = parser.parse_args(argv)
    from hftl.outputs.hub import MODE_WORDS, publish, push

    mode = args.mode or "auto"
    if args.dry_run:
        result = push(args.output_dir, args.repo_id, private=args.private, mode=mode, dry_run=True)
        print(f"Would push the {MODE_WORDS[result.mode]} to {result.url}:")
        print("\n".join(f"  {name}" for name in result.files))
        return 0
    outcome = publish(
        args.output_dir,
        args.repo_id,
        private=args.private,
        mode=mode,
        commit_message=args.commit_message,
        strict=True,
    )
    return 0 if outcome["ok"] else 1


def _predict(argv: Sequence[str]) -> int:
    """Classify texts (or image files) with a trained model: one JSON line per input."""
    import json

    parser = argparse.ArgumentParser(
        prog="hftl predict", description="Label names and scores, one line each."
    )
    parser.add_argument("model", help="hftl output folder (any family, LoRA included) or Hub id")
    parser.add_argument("inputs", nargs="+", help="texts, or image files/URLs for an image model")
    parser.add_argument(
        "--top-k",
        type=positive_int,
        default=None,
        help="labels per input (default 1; a multi-label model: every label, each with its sigmoid score)",
    )
    args = parser.parse_args(argv)
    from hftl.inference.predict import predict

    results = predict(args.model, args.inputs, top_k="auto" if args.top_k is None else args.top_k)
    for item, result in zip(args.inputs, results, strict=True):
        print(json.dumps({"input": item, "predictions": result if isinstance(result, list) else [result]}))
    return 0


def _embed(argv: Sequence[str]) -> int:
    """Write features of texts, images or words to a .npy file (``hftl.inference.embed``)."""
    import io

    import numpy as np

    from hftl.outputs.files import write_bytes

    parser = argparse.ArgumentParser(prog="hftl embed", description="Features from a model or word vectors.")
    parser.add_argument("source", help="model folder/Hub id/hftl output folder, or vectors:PATH_OR_NAME")
    parser.add_argument("inputs", nargs="*", help="texts, words or image files")
    parser.add_argument(
        "--input-file", help="a text file with one input per line (instead of/besides inputs)"
    )
    parser.add_argument("--output", required=True, help="where to write the [inputs x dim] array (.npy)")
    parser.add_argument("--pooling", choices=("pooler", "cls", "mean", "max"), default=None)
    parser.add_argument("--normalize", action="store_true", help="L2-normalise each row")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    args = parser.parse_args(argv)
    output = Path(args.output if args.output.endswith(".npy") else f"{args.output}.npy")  # np.save's name
    if (output.exists() or output.is_symlink()) and not args.overwrite:
        parser.error(f"--output {output} exists; pass --overwrite to replace it, or choose another --output")
    inputs = list(args.inputs)
    if args.input_file:
        try:
            with open(args.input_file, encoding="utf-8") as handle:
                inputs += [line.rstrip("\n") for line in handle if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            parser.error(f"--input-file {args.input_file}: {error} (one UTF-8 input per line)")
    if not inputs:
        parser.error(
            f"--input-file {args.input_file} has no non-blank lines; give one input per line"
            if args.input_file
            else "give inputs or --input-file"
        )
    from hftl.inference.embed import embed

    features = embed(
        args.source, inputs, pooling=args.pooling, normalize=args.normalize, batch_size=args.batch_size
    )
    buffer = io.BytesIO()
    np.save(buffer, features)
    write_bytes(output, buffer.getvalue())  # atomic: a link at --output is replaced, not written through
    print(f"Saved {features.shape[0]} x {features.shape[1]} features to {output}")
    return 0


def _advise(argv: Sequence[str]) -> int:
    """Measure dataset size and feature similarity, and say which case (and cut) to use; rank --model a,b,c."""
    from hftl.config import explicit_cli_values, resolve_config
    from hftl.settings import AUTO_CASE

    values = explicit_cli_values(argv, prog="hftl advise")  # --help ends here, before torch
    from hftl.advisor.advise import advise
    from hftl.advisor.decision import render_ranking, write_advice
    from hftl.recipes.run import quiet_library_logs

    quiet_library_logs()
    if values.get("case", AUTO_CASE) != AUTO_CASE:
        from hftl.errors import ConfigError

        raise ConfigError(
            f"hftl advise decides the case from the data: leave --case {values['case']} out (`hftl plan --case "
            f"{values['case']}` prints that case's plan)"
        )
    values["case"] = AUTO_CASE
    if "output_dir" not in values and values.get("task"):
        values["output_dir"] = f"runs/{Path(values['task']).stem}-advice"
    config = resolve_config(values)
    from hftl.outputs.run_folder import check_advice_folder
    from hftl.training.resume import check_outside_dataset

    check_outside_dataset(config)  # advice.json beside the data would be read as data by the next run
    check_advice_folder(Path(config.output_dir))
    advices = advise(config)
    for advice in advices:
        print(advice.render())
    if len(advices) > 1:
        print(render_ranking(advices))
    trials = None
    if (
        config.advise_budget > 0 and len(advices) <= 1
    ):  # the LogME prior above (none: multi-label); trials decide
        from hftl.advisor.advise import choose_by_trials
        from hftl.recipes.run import trial_run

        _, trials = choose_by_trials(config, None, trial_run)
    json_path, md_path = write_advice(config.output_dir, advices, trials)
    print(f"Wrote {json_path} and {md_path}")
    return 0


def _compare(argv: Sequence[str]) -> int:
    """Train the transfer setup and a from-scratch baseline; report start, slope and asymptote benefits."""
    from hftl.cli_args import SettingsParser, add_settings
    from hftl.config import build_parser, explicit_cli_values, resolve_config
    from hftl.settings import AUTO_CASE
    from hftl.settings.compare import CompareSettings

    own = SettingsParser(
        prog="hftl compare",
        description="Every transfer plan vs from-scratch learning curves. Also takes every flag of `python -m hftl.train`.",
        add_help=False,
    )
    add_settings(own, CompareSettings, title="compare")
    if "-h" in argv or "--help" in argv:
        own.print_help()
        print("\nrun settings (as for python -m hftl.train):")
        build_parser("hftl compare").print_help()
        return 0
    known, rest = own.parse_known_args(list(argv))
    settings = CompareSettings(**vars(known))
    values = explicit_cli_values(rest, prog="hftl compare")
    from hftl.recipes.compare import compare
    from hftl.recipes.run import quiet_library_logs

    quiet_library_logs()
    if "output_dir" not in values and values.get("task"):
        values["output_dir"] = f"runs/{Path(values['task']).stem}-compare"
    values.setdefault("case", AUTO_CASE)  # "the chosen transfer setup": the advisor's, unless --case is given
    config = resolve_config(values)
    report = compare(config, settings)
    from hftl.recipes.report import verdict

    for size in report["sizes"]:
        print(verdict(size))
    print(
        f"Wrote {Path(resolve_config(values).output_dir) / 'report.md'} (and report.json, report.html, plots)"
    )
    return 0


def _report(argv: Sequence[str]) -> int:
    """Redraw a finished run's report (per-class scores, confusion matrix, learning curve) and its card."""
    parser = argparse.ArgumentParser(
        prog="hftl report",
        description="Redraw a run's report from its saved validation predictions and logs: "
        "classification_report.json, confusion_matrix.png, learning_curve.png, and the model card that links them.",
    )
    parser.add_argument("output_dir", help="a finished run's --output-dir")
    args = parser.parse_args(list(argv))
    from hftl.outputs.card import write_cards
    from hftl.outputs.run_report import redraw

    for note in redraw(args.output_dir):
        print(note)
    write_cards(Path(args.output_dir))
    print(f"Redrew the report in {args.output_dir}")
    return 0


def _export(argv: Sequence[str]) -> int:
    """Export a run to ONNX beside its labels and processor; exit 2 when ONNX Runtime and PyTorch disagree."""
    parser = argparse.ArgumentParser(
        prog="hftl export",
        description="Export a finished run (any family, LoRA merged) to a folder ONNX Runtime serves: model.onnx "
        "with dynamic batch (and sequence) axes, config.json with the labels, and the tokenizer or image "
        "processor. ONNX Runtime's logits are then compared with PyTorch's on the run's validation examples; "
        "nothing is written when they differ by more than --atol. Needs pip install 'hftl[export]'.",
    )
    parser.add_argument("run_dir", help="the run's --output-dir")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="export format (default onnx)")
    parser.add_argument("--output", default=None, help="the export folder (default RUN_DIR/onnx)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset, 18 or later (default: torch's)")
    parser.add_argument(
        "--atol",
        type=float,
        default=1e-4,
        help="largest max-abs logit difference ONNX Runtime vs PyTorch that passes the check (default 1e-4)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export at --output")
    args = parser.parse_args(list(argv))
    from hftl.outputs.onnx_export import export

    export(
        args.run_dir,
        format=args.format,
        output=args.output,
        opset=args.opset,
        atol=args.atol,
        overwrite=args.overwrite,
    )
    return 0


def _demo(argv: Sequence[str]) -> int:
    from hftl.recipes.demo import main as demo_main

    return demo_main(argv)


COMMANDS = {
    "train": (_train, "train a transfer setup (same flags as python -m hftl.train)"),
    "plan": (_plan, "print the transfer plan for --task/--case/--model without training"),
    "tasks": (_tasks, "list tasks, backbone families, cases and strategies"),
    "push": (_push, "publish an output folder (adapter, merged or full model + card) to the Hub"),
    "predict": (_predict, "label names and scores for texts or images from a trained model"),
    "embed": (_embed, "features of texts, images or words from a model or word vectors, to .npy"),
    "export": (_export, "export a run to ONNX (model.onnx + labels + processor), checked against PyTorch"),
    "report": (_report, "redraw a run's report: per-class scores, confusion matrix, learning curve"),
    "demo": (_demo, "offline demo: the four cases vs from-scratch baselines on Fashion-MNIST (minutes, CPU)"),
    "advise": (_advise, "pick the case (and cut) from the data; rank candidate models (--model a,b,c)"),
    "compare": (_compare, "every plan vs from-scratch learning curves: start, slope, asymptote, a verdict"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = ["usage: hftl COMMAND [flags]", "", "commands:"]
        lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in COMMANDS.items()]
        asked = not argv or argv[0] in ("-h", "--help")
        if not asked:
            close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines = [f"hftl: error: unknown command {argv[0]!r}{hint}", "", *lines]
        print("\n".join(lines), file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    command, rest = argv[0], argv[1:]
    return exit_code_of(lambda: COMMANDS[command][0](rest))


if __name__ == "__main__":
    sys.exit(main())
