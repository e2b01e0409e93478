"""Throughput figures for every run: steady-state samples/s, the share of time spent waiting for data, peak memory,
and on a GPU the model FLOPs utilisation (MFU).

FLOP convention: the FLOPs of one real training step (forward + backward of the first batch) are counted with
``torch.utils.flop_counter.FlopCounterMode``, which counts matrix multiplications, convolutions and attention with
one multiply-add = 2 FLOPs; optimizer updates and elementwise ops are not counted. MFU = (FLOPs per sample x
samples/s per device) / the device's peak dense FLOP/s for the precision in use (bf16/fp16 tensor cores, or TF32 for
fp32 matmuls), from ``PEAK_FLOPS``. Trainer's ``total_flos`` (6 x parameters x tokens) is not used: it is wrong for
vision models and for frozen layers.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch

WARMUP_BATCHES = 5
FLOP_CONVENTION = (
    "FLOPs of one training step (forward + backward) counted by torch.utils.flop_counter.FlopCounterMode "
    "(matmul/conv/attention, 1 multiply-add = 2 FLOPs; optimizer and elementwise ops not counted); "
    "MFU = achieved FLOP/s per device / peak dense FLOP/s of the device at the precision used"
)
# peak dense FLOP/s per device (vendor datasheets, no sparsity): name fragment -> {precision: FLOP/s}
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12},  # SXM / HBM3
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    "A10": {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},
    "RTX 4090": {"bf16": 165e12, "fp16": 165e12, "tf32": 82.6e12, "fp32": 82.6e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
}


def peak_flops(device_name: str, precision: str) -> tuple[float, str] | None:
    """Peak dense FLOP/s of ``device_name`` at ``precision`` (bf16, fp16, tf32, fp32), with the table row used."""
    for fragment, peaks in PEAK_FLOPS.items():
        if fragment.lower() in device_name.lower() and precision in peaks:
            return peaks[precision], f"{fragment} {precision}"
    return None


def matmul_precision(mixed_precision: str) -> str:
    """The precision the matmuls run in: autocast dtype, else TF32 when PyTorch allows it for fp32."""
    if mixed_precision in ("bf16", "fp16"):
        return mixed_precision
    return "tf32" if torch.get_float32_matmul_precision() != "highest" else "fp32"


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


class ThroughputMeter:
    """Times each training batch as (waiting for data, computing), counts one step's FLOPs, and summarises the
    steady state (the first ``warmup`` batches are excluded: allocator warm-up, worker start, compilation)."""

    def __init__(self, device: torch.device, num_processes: int = 1, warmup: int = WARMUP_BATCHES):
        self.device, self.num_processes, self.warmup = device, num_processes, warmup
        self.batches: list[tuple[float, float, int]] = []  # (wait s, compute s, samples) per batch
        self.flops_per_step: float | None = None
        self.samples_in_counted_step = 0
        self._fetched_at = 0.0
        self._wait = 0.0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def timed(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Yield the batches, timing how long each one took to arrive."""
        iterator = iter(batches)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self._fetched_at = time.perf_counter()
            self._wait = self._fetched_at - started
            yield batch

    def step_done(self, samples: int) -> None:
        """Call after the batch's step finished (the loop reads the loss, which synchronises the device)."""
        if not self.batches and self.flops_per_step is not None:
            self.samples_in_counted_step = samples
        self.batches.append((self._wait, time.perf_counter() - self._fetched_at, samples))

    def count_flops(self, enabled: bool = True) -> contextlib.AbstractContextManager:
        """A FLOP counter around the first training step (forward + backward); a no-op afterwards."""
        if not enabled or self.flops_per_step is not None or self.batches:
            return contextlib.nullcontext()
        return _FlopCount(self)

    def summary(self, mixed_precision: str = "no") -> dict[str, Any]:
        steady = self.batches[self.warmup :] if len(self.batches) > self.warmup else self.batches
        wait = sum(b[0] for b in steady)
        busy = wait + sum(b[1] for b in steady)
        samples = sum(b[2] for b in steady)
        per_device = samples / busy if busy > 0 else 0.0
        result: dict[str, Any] = {
            "samples_per_second": round(per_device * self.num_processes, 2),
            "samples_per_second_per_device": round(per_device, 2),
            "data_wait_fraction": round(wait / busy, 4) if busy > 0 else 0.0,
            "steady_batches": len(steady),
            "warmup_batches_excluded": len(self.batches) - len(steady),
            "peak_cpu_rss_mb": peak_rss_mb(),
        }
        if self.device.type == "cuda":
            result["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        if self.flops_per_step and self.samples_in_counted_step:
            per_sample = self.flops_per_step / self.samples_in_counted_step
            achieved = per_sample * per_device
            result["flops_per_sample"] = per_sample
            result["achieved_tflops_per_device"] = float(f"{achieved / 1e12:.4g}")
            result["flop_convention"] = FLOP_CONVENTION
            if self.device.type == "cuda":
                result.update(_mfu(achieved, self.device, mixed_precision))
        return result


class _FlopCount:
    def __init__(self, meter: ThroughputMeter):
        from torch.utils.flop_counter import FlopCounterMode

        self.meter, self.counter = meter, FlopCounterMode(display=False)

    def __enter__(self) -> _FlopCount:
        self.counter.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.counter.__exit__(*exc)
        self.meter.flops_per_step = float(self.counter.get_total_flops())


def _mfu(achieved: float, device: torch.device, mixed_precision: str) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device)
    precision = matmul_precision(mixed_precision)
    peak = peak_flops(name, precision)
    if peak is None:
        return {"mfu": None, "mfu_note": f"no peak FLOP/s known for {name!r} at {precision}"}
    return {
        "mfu": round(achieved / peak[0], 4),
        "peak_flops": peak[0],
        "peak_source": peak[1],
        "device_name": name,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """One line for the run log."""
    parts = [
        f"{summary['samples_per_second']:.1f} samples/s (steady state)",
        f"waiting for data {100 * summary['data_wait_fraction']:.1f}%",
        f"peak RSS {summary['peak_cpu_rss_mb']:.0f} MiB",
    ]
    if "peak_cuda_allocated_mb" in summary:
        parts.append(f"peak CUDA {summary['peak_cuda_allocated_mb']:.0f} MiB")
    if summary.get("achieved_tflops_per_device") is not None:
        parts.append(f"{summary['achieved_tflops_per_device']:.3g} TFLOP/s per device")
    if summary.get("mfu") is not None:
        parts.append(f"MFU {100 * summary['mfu']:.1f}% of {summary['peak_source']}")
    return "Throughput: " + ", ".join(parts)
