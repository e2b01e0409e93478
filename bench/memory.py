"""Where the memory of fine-tuning goes, per engine (docs/scaling.md's tables come from here).

1. Model and optimizer state per GPU (arithmetic, as DeepSpeed's ``estimate_zero*_model_states_mem_needs``):
   mixed-precision AdamW keeps fp32 weights (4 bytes/parameter), fp32 gradients (4) and two fp32 moments (8) for
   every trained parameter; bf16 autocast adds no weight copy. DDP holds all of it on every GPU; ZeRO-2 shards
   gradients and moments; ZeRO-3 and FSDP (full sharding) shard the weights too; LoRA trains ~1% of the weights;
   QLoRA stores the frozen base in 4 bits (0.5 byte/parameter plus ~0.1 for the NF4 constants).
2. Activations with and without gradient checkpointing, measured: the bytes autograd saves for the backward pass of
   one training step (``torch.autograd.graph.saved_tensors_hooks``; device-independent), and the step time, on a
   BERT-base shaped model at batch 8 x 128 tokens.

    python bench/memory.py                  # both tables (the measurement takes a few minutes on a small CPU)
    python bench/memory.py --no-measure     # the arithmetic only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's hftl, run from anywhere

GB = 1e9
# trained-state bytes per parameter with mixed-precision AdamW: fp32 weight, fp32 gradient, two fp32 moments
WEIGHT, GRAD, MOMENTS = 4, 4, 8
NF4_BYTES = 0.5 + 0.06  # 4-bit weights + double-quantized absmax constants (QLoRA paper: ~0.127 bit/param)
LORA_FRACTION = 0.01  # adapters + head as a share of the parameters (r=8 on attention: well under 1%)


def state_gb(params: float, engine: str, gpus: int) -> float:
    """GB of weights, gradients and AdamW moments on each GPU (activations and buffers not included)."""
    if engine == "DDP":
        return params * (WEIGHT + GRAD + MOMENTS) / GB
    if engine == "ZeRO-2":
        return params * (WEIGHT + (GRAD + MOMENTS) / gpus) / GB
    if engine in ("ZeRO-3", "FSDP"):
        return params * (WEIGHT + GRAD + MOMENTS) / gpus / GB
    if engine == "LoRA (DDP)":
        return params * (WEIGHT + LORA_FRACTION * (GRAD + MOMENTS)) / GB
    if engine == "QLoRA":
        return params * (NF4_BYTES + LORA_FRACTION * (WEIGHT + GRAD + MOMENTS)) / GB
    raise ValueError(engine)


def state_table(gpus: int = 8) -> str:
    sizes = {"ViT-B/16 (86M)": 86e6, "BERT-large (335M)": 335e6, "ViT-H/14 (632M)": 632e6, "1.3B": 1.3e9}
    sizes |= {"7B": 7e9, "13B": 13e9}
    engines = ("DDP", "ZeRO-2", "ZeRO-3", "FSDP", "LoRA (DDP)", "QLoRA")
    lines = [f"| model | {' | '.join(engines)} |", "| --- |" + " ---: |" * len(engines)]
    for name, params in sizes.items():
        lines.append(f"| {name} | " + " | ".join(f"{state_gb(params, e, gpus):.1f}" for e in engines) + " |")
    return "\n".join(lines)


def measure(batch: int = 8, tokens: int = 128, steps: int = 3) -> str:
    """Saved-for-backward bytes and step time of a BERT-base shaped model, plain vs gradient checkpointing."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from hftl.training.devices import enable_gradient_checkpointing

    saved = {"bytes": 0}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved["bytes"] += tensor.numel() * tensor.element_size()
        return tensor

    rows = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = BertForSequenceClassification(BertConfig()).train()
        if checkpointing:
            enable_gradient_checkpointing(model)
        inputs = torch.randint(0, 30522, (batch, tokens))
        labels = torch.randint(0, 2, (batch,))
        times = []
        for step in range(steps):
            saved["bytes"] = 0
            started = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                loss = model(input_ids=inputs, labels=labels).loss
            recorded = saved["bytes"]
            loss.backward()
            model.zero_grad(set_to_none=True)
            if step:  # the first step warms up
                times.append(time.perf_counter() - started)
        rows.append((checkpointing, recorded, sum(times) / len(times)))
    plain, checkpointed = rows
    return "\n".join(
        [
            f"BERT-base, batch {batch} x {tokens} tokens, fp32, one training step (forward + backward):",
            "| | saved for backward (MB) | step time (s) |",
            "| --- | ---: | ---: |",
            f"| plain | {plain[1] / 2**20:.0f} | {plain[2]:.2f} |",
            f"| --gradient-checkpointing | {checkpointed[1] / 2**20:.0f} | {checkpointed[2]:.2f} |",
            f"| ratio | {checkpointed[1] / plain[1]:.2f}x | {checkpointed[2] / plain[2]:.2f}x |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the sharded engines split the state over")
    parser.add_argument(
        "--no-measure", action="store_true", help="skip the gradient-checkpointing measurement"
    )
    args = parser.parse_args()
    print(
        f"Model and optimizer state per GPU in GB (activations not included); sharded engines over {args.gpus} GPUs:\n"
    )
    print(state_table(args.gpus))
    if not args.no_measure:
        print()
        print(measure())


if __name__ == "__main__":
    main()
