"""The ``setfit`` package on the exact samples of bench/few_shot_sst2.py: the reference for ``--strategy contrastive``.

setfit is no dependency of hftl (it pulls sentence-transformers 6 and trains a ``SentenceTransformer`` plus a
scikit-learn head in its own format); it installs beside transformers 5.24, so run this in a scratch environment that
sees the installed packages:

    python -m venv --system-site-packages /tmp/setfit-venv && /tmp/setfit-venv/bin/pip install setfit==1.2.0
    /tmp/setfit-venv/bin/python bench/setfit_reference.py 8:0 8:1      # K:SEED ... ; appends one JSON line each

Same settings as the contrastive arm: R = 20 rounds (``num_iterations``), 1 epoch, body lr 2e-5, batch 16, max length
64, SetFit's default head (``LogisticRegression``); accuracy on the 872 test sentences.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, minilm  # noqa: E402
from bench.few_shot_sst2 import dataset  # noqa: E402

RESULTS = REPO / "bench" / "results" / "few_shot_sst2_setfit.jsonl"


def main(argv: list[str]) -> int:
    import numpy as np
    from setfit import SetFitModel, Trainer, TrainingArguments

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for spec in argv or ["8:0"]:
        k, seed = (int(part) for part in spec.split(":"))
        data = dataset(k, seed)
        model = SetFitModel.from_pretrained(str(minilm()))
        args = TrainingArguments(
            batch_size=16, num_epochs=1, num_iterations=20, seed=seed, body_learning_rate=2e-5, max_length=64
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data["train"],
            eval_dataset=data["test"],
            metric=lambda predicted, truth: {
                "accuracy": float((np.asarray(predicted) == np.asarray(truth)).mean())
            },
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        row = {
            "arm": "setfit-1.2.0",
            "per_class": k,
            "seed": seed,
            "test_accuracy": trainer.evaluate()["accuracy"],
            "train_seconds": round(seconds, 1),
        }
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
