"""The engines that need CUDA, run once on a GPU (``bench/gpu_engines.sh``): DeepSpeed ZeRO-2 and ZeRO-3 through
configs/accelerate/ (full fine-tuning stopped mid-run and resumed, compared with a run that never stopped; LoRA
under ZeRO-2), and QLoRA (``--strategy lora --quantize 4bit``) against plain LoRA on the same BERT-base.

Every run is the CLI a user types (``accelerate launch --config_file ... -m hftl.train``, ``python -m hftl.train``),
on a randomly initialised BERT built from its config (the GPU machine has no Hub) and SST-2-like sentences. What is
checked is the engines' bookkeeping (a resumed run equals one that never stopped), not accuracy: two epochs of a
random BERT stay near chance. Writes a markdown table.

    bash bench/gpu_engines.sh            # one GPU with deepspeed and bitsandbytes installed, about 3 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench import common  # noqa: E402
from bench.gpu_benchmarks import bert, sentences  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL_BERT = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)


def train(args: list[str], launcher: list[str], log: Path) -> dict[str, Any]:
    """One ``hftl.train`` run in its own process; its metrics.json (or the error's last lines)."""
    started = time.perf_counter()
    done = subprocess.run(
        [*launcher, "-m", "hftl.train", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    log.write_text(done.stdout + "\n" + done.stderr, encoding="utf-8")
    out = Path(args[args.index("--output-dir") + 1])
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not (out / "metrics.json").is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        launcher = (
            "ChildFailedError",
            "elastic",
        )  # torchrun's own report of a failed child says nothing more
        errors = [x for x in lines if ("Error" in x or "error:" in x) and not any(w in x for w in launcher)]
        return {"ok": False, "seconds": seconds, "error": (errors or lines or ["no output"])[-1]}
    metrics = json.loads((out / "metrics.json").read_text())
    return {"ok": True, "seconds": seconds, **metrics}


def deepspeed(stage: int) -> list[str]:
    config = REPO / f"configs/accelerate/deepspeed_zero{stage}.yaml"
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        "1",
    ]


def keep_until(out: Path, step: int) -> None:
    """As if the run had been killed after the checkpoint of ``step``: later checkpoints and outputs removed."""
    for folder in (out / "checkpoints").iterdir():
        if int(folder.name.split("-")[1]) > step:
            shutil.rmtree(folder)
    (out / "metrics.json").unlink()


def same_weights(a: Path, b: Path) -> bool:
    from hftl.outputs.loading import load

    first, second = load(a).state_dict(), load(b).state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def summary(name: str, result: dict[str, Any], resumed: str = "—") -> str:
    if not result["ok"]:
        return f"| {name} | failed: {result['error'][:300]} | | | | |"
    throughput = result.get("throughput", {})
    memory = throughput.get("peak_cuda_allocated_mb")
    accuracy = result["best"].get("eval_accuracy")
    return (
        f"| {name} | {accuracy:.3f} | {throughput.get('samples_per_second', float('nan')):.0f} "
        f"| {'—' if memory is None else f'{memory:.0f}'} | {result['seconds']:.0f} | {resumed} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="work folder")
    parser.add_argument("--report", type=Path, required=True, help="write the markdown table here")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny data and models: checks the script runs (CPU too)"
    )
    args = parser.parse_args()
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    data = work / "sentences"
    sentences(64 if args.smoke else 2048, 32 if args.smoke else 256).save_to_disk(str(data))
    small = bert(work / "bert-small", smoke=False, **SMALL_BERT)  # the engines' bookkeeping, not their speed
    base = small if args.smoke else bert(work / "bert-base", smoke=False)

    def flags(model: Path, out: str, strategy: str, lr: float, *extra: str) -> list[str]:
        return [
            "--task", "text", "--case", "large_similar", "--strategy", strategy, "--model", str(model),
            "--dataset", str(data), "--output-dir", str(work / out), "--epochs", "2", "--batch-size", "32",
            "--lr", str(lr), "--seed", "7", "--report-to", "none", "--save-total-limit", "10", *extra,
        ]  # fmt: skip

    rows, python = [], [sys.executable]
    for stage in (2, 3):
        launcher = deepspeed(stage)
        # 2048 / 32 = 64 steps per epoch: a checkpoint every 48 steps, the run cut after step 48 (mid first epoch)
        full = flags(small, f"zero{stage}-straight", "full", 1e-4, "--save-steps", "48")
        straight = train(full, launcher, work / f"zero{stage}-straight.log")
        stopped = work / f"zero{stage}-stopped"
        resumed: dict[str, Any] = {"ok": False, "error": "the first run failed", "seconds": 0}
        if straight["ok"]:
            shutil.copytree(work / f"zero{stage}-straight", stopped)
            keep_until(stopped, 48)
            again = [
                *flags(small, f"zero{stage}-stopped", "full", 1e-4, "--save-steps", "48"),
                "--resume",
                "auto",
            ]
            resumed = train(again, launcher, work / f"zero{stage}-resumed.log")
        exact = "—"
        if straight["ok"] and resumed["ok"]:
            exact = "byte-identical" if same_weights(work / f"zero{stage}-straight", stopped) else "DIFFERENT"
            exact += f", history {'equal' if straight['history'] == resumed['history'] else 'DIFFERENT'}"
        rows.append(
            summary(
                f"ZeRO-{stage} full fine-tuning (BERT 4x256), stopped at step 48 and resumed", straight, exact
            )
        )
        print(rows[-1], flush=True)
    lora = train(flags(small, "zero2-lora", "lora", 1e-3), deepspeed(2), work / "zero2-lora.log")
    rows.append(summary("ZeRO-2 LoRA (BERT 4x256)", lora))
    for name, extra in (
        ("LoRA, bf16 base (BERT-base)", []),
        ("QLoRA, 4-bit NF4 base (BERT-base)", ["--quantize", "4bit"]),
    ):
        result = train(
            flags(base, name.split(",")[0].lower() + ("-4bit" if extra else ""), "lora", 1e-3,
                  "--mixed-precision", "bf16", *extra),
            python, work / f"{'qlora' if extra else 'lora'}.log",
        )  # fmt: skip
        rows.append(summary(name, result))
        print(rows[-1], flush=True)

    versions = {
        name: __import__(name).__version__ for name in ("torch", "transformers", "accelerate", "peft")
    }
    for optional in ("deepspeed", "bitsandbytes"):
        try:
            versions[optional] = __import__(optional).__version__
        except Exception as error:  # noqa: BLE001  # reported, not fatal: its rows say they failed
            versions[optional] = f"not importable ({type(error).__name__})"
    report = "\n".join(
        [
            f"GPU engines on {common.machine()}; {', '.join(f'{k} {v}' for k, v in versions.items())}",
            "",
            "| run | best validation accuracy | samples/s | peak CUDA MiB | wall s | resume |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
            *rows,
            "",
            "One process on one GPU; 2048 SST-2-like sentences (the label is the first word's parity), 2 epochs, "
            "batch 32, seed 7. Resume: the run's checkpoints after step 48 deleted, `--resume auto`, final weights "
            "and history compared with the run that never stopped.",
        ]
    )
    print("\n" + report)
    args.report.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
