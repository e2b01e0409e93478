"""bench/gpu_benchmarks.sh runs end to end with --smoke (tiny models and data, CPU): every row of the table is
filled by both sides. Slow (about 30 s), off by default: ``pytest -m slow``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_benchmark_script_runs_end_to_end_with_smoke_sizes(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_benchmarks.sh"), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [
        line for line in (tmp_path / "gpu_benchmarks.md").read_text().splitlines() if line.startswith("| ")
    ]
    assert len(rows) == 2 + 4  # header, rule, four benchmarks (ViT full twice: uint8 and float32 batches)
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0, row  # both speeds measured
        assert float(cells[6]) >= 0 and float(cells[7]) >= 0, (
            row
        )  # both walls (whole seconds: 0 at smoke sizes)
    assert not (tmp_path / "work").exists()  # only the table is kept
