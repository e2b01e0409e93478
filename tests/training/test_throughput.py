"""Throughput figures: waiting-for-data share, steady state without the warm-up batches, FLOPs counted per step
(multiply-add = 2 FLOPs, forward + backward), and the peak FLOP/s table used for MFU."""

from __future__ import annotations

import time

import pytest
import torch

from hftl.training.throughput import ThroughputMeter, format_summary, matmul_precision, peak_flops


def slow_batches(count: int, delay: float):
    for i in range(count):
        time.sleep(delay)
        yield {"labels": torch.zeros(4), "i": i}


def test_data_wait_share_and_steady_state_exclude_the_first_batches():
    meter = ThroughputMeter(torch.device("cpu"), num_processes=2, warmup=2)
    for _ in meter.timed(slow_batches(6, 0.02)):
        time.sleep(0.02)  # "compute" as long as the wait
        meter.step_done(4)
    summary = meter.summary()
    assert summary["steady_batches"] == 4 and summary["warmup_batches_excluded"] == 2
    assert 0.3 < summary["data_wait_fraction"] < 0.7
    assert summary["samples_per_second"] == pytest.approx(
        2 * summary["samples_per_second_per_device"], rel=1e-3
    )
    assert 40 < summary["samples_per_second_per_device"] < 110  # 4 samples per ~0.04 s
    assert summary["peak_cpu_rss_mb"] > 10
    assert "samples/s (steady state)" in format_summary(summary)


def test_flops_of_one_training_step_are_counted_once_as_forward_plus_backward():
    layer = torch.nn.Linear(16, 8, bias=False)
    meter = ThroughputMeter(torch.device("cpu"), warmup=0)
    for batch in meter.timed([torch.randn(4, 16), torch.randn(4, 16)]):
        with meter.count_flops():
            layer(batch).sum().backward()
        meter.step_done(4)
    # forward 2*B*in*out, backward the same again for the weight gradient (the input needs none)
    assert meter.flops_per_step == 2 * (2 * 4 * 16 * 8)
    summary = meter.summary()
    assert summary["flops_per_sample"] == meter.flops_per_step / 4
    assert "mfu" not in summary  # only on a GPU


def test_peak_table_picks_the_device_row_and_precision():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == (989e12, "H100 bf16")
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == (756e12, "H100 PCIe bf16")
    assert peak_flops("NVIDIA A100-SXM4-40GB", "tf32") == (156e12, "A100 tf32")
    assert peak_flops("Some Future GPU", "bf16") is None
    assert matmul_precision("bf16") == "bf16"
    assert matmul_precision("no") in ("tf32", "fp32")
