"""hftl's schedules are transformers' schedules, step for step (without importing transformers' trainer utilities)."""

from __future__ import annotations

import pytest
import torch
from transformers import get_scheduler

from hftl.training.schedules import SCHEDULES, make_schedule


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("warmup, total", [(0, 10), (3, 20), (5, 5)])
def test_each_schedule_equals_transformers(name, warmup, total):
    def lrs(build):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = build(optimizer)
        seen = []
        for _ in range(total + 2):
            seen.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return seen

    ours = lrs(lambda opt: make_schedule(name, opt, warmup, total))
    theirs = lrs(lambda opt: get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total))
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_other_schedules_come_from_transformers():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert type(make_schedule("polynomial", optimizer, 2, 10)).__name__ == "LambdaLR"
