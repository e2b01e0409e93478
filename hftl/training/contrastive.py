"""Stage 1 of ``--strategy contrastive`` (SetFit's recipe): tune the encoder on sentence pairs, before the head.

The pairs come from the training examples (``hftl.data.pairs``: same label -> target cosine 1, different -> 0); the
loss is sentence-transformers' ``CosineSimilarityLoss`` (the MSE between the cosine of the two pooled embeddings and
the target), SetFit's default. The stage trains the classifier's own encoder in place, pooled as its head reads it,
so what follows is an ordinary hftl run: ``fit`` trains the new head on the frozen, tuned body (with the feature
cache), and the saved model is one folder that ``hftl.load`` and ``transformers.pipeline`` load.

Why not the ``setfit`` package: setfit 1.2.0 installs and imports beside transformers 5.24 (it pulls
sentence-transformers 6), but it trains a ``SentenceTransformer`` and a scikit-learn head with its own trainer and
saves its own format, which ``transformers.pipeline`` cannot load; hftl's checkpoints, resume, LoRA, card and Hub
push would all need a second path. The recipe is small (pair sampling and one loss), so it runs here, on
Accelerate, and setfit served as the reference for the defaults (on the same samples the two agree within a point:
docs/results.md, section 6).

Resume: the stage writes no checkpoint. It is deterministic under ``--seed`` (pairs from numpy's generator, batch
order from Accelerate's seedable sampler, dropout from the seeded torch generator), so a resumed run repeats it and
gets the same body, as checkpoints already rebuild every frozen weight from the base model and the seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hftl.config import RunConfig
from hftl.data.pairs import Pair, sentence_pairs
from hftl.data.preprocess import LABELS, ModelInputs
from hftl.modeling.pooled import pool
from hftl.training.schedules import make_schedule
from hftl.transfer.plan import ContrastiveSpec, TransferPlan


@dataclass
class ContrastiveResult:
    """What stage 1 did (metrics.json ``contrastive``, the model card)."""

    pairs: int
    positive_pairs: int
    steps: int
    seconds: float
    losses: list[float]  # the mean training loss of each --log-steps window, in order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        first, last = (self.losses[0], self.losses[-1]) if self.losses else (math.nan, math.nan)
        return (
            f"contrastive stage: {self.pairs} sentence pairs ({self.positive_pairs} same-label), {self.steps} steps "
            f"in {self.seconds:.1f} s; loss {first:.4f} -> {last:.4f}"
        )


class PairEncoder(nn.Module):
    """The classifier's encoder and pooling, scoring two batches of sentences by cosine similarity (no head)."""

    def __init__(self, encoder: nn.Module, pooling: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = self.encoder(**batch, return_dict=True)
        return pool(outputs, batch.get("attention_mask"), self.pooling)

    def forward(self, first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cosine_similarity(self.embed(first), self.embed(second), dim=-1)


class PairDataset(Dataset):
    """The pairs as rows of the tokenized training split (labels dropped: the target is the pair's)."""

    def __init__(self, train: Any, pairs: Sequence[Pair]) -> None:
        self.rows = [{k: v for k, v in train[i].items() if k != LABELS} for i in range(len(train))]
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[dict, dict, float]:
        pair = self.pairs[index]
        return self.rows[pair.first], self.rows[pair.second], pair.target


@dataclass
class PairCollator:
    """Pads each side of a batch of pairs with the run's own collator."""

    collator: Any

    def __call__(self, batch: list[tuple[dict, dict, float]]) -> dict[str, Any]:
        return {
            "first": self.collator([first for first, _, _ in batch]),
            "second": self.collator([second for _, second, _ in batch]),
            "target": torch.tensor([target for _, _, target in batch], dtype=torch.float32),
        }


def encoder_of(model: nn.Module) -> nn.Module:
    """The base encoder of a transformers classifier (``model.bert``, ``model.distilbert``...)."""
    return model.base_model


def pooling_of(model: nn.Module, spec: ContrastiveSpec) -> str:
    return getattr(model.config, "classifier_pooling", None) or spec.pooling


def pairs_for(model: nn.Module, inputs: ModelInputs, spec: ContrastiveSpec, seed: int) -> list[Pair]:
    labels = [int(label) for label in inputs.train[LABELS]]
    id2label = getattr(model.config, "id2label", None) or {}
    names = [str(id2label.get(i, i)) for i in range(max(labels, default=-1) + 1)]
    return sentence_pairs(labels, spec.iterations, seed, names)


def tune_body_first(
    model: nn.Module, plan: TransferPlan, inputs: ModelInputs, config: RunConfig, accelerator: Accelerator
) -> ContrastiveResult | None:
    """A contrastive plan's stage 1, before its body is frozen for the head (None for any other plan)."""
    if plan.contrastive is None:
        return None
    result = tune_encoder(model, inputs, plan.contrastive, config, accelerator)
    accelerator.print(result.summary())
    return result


def tune_encoder(
    model: nn.Module, inputs: ModelInputs, spec: ContrastiveSpec, config: RunConfig, accelerator: Accelerator
) -> ContrastiveResult:
    """Train ``model``'s encoder in place on the training split's pairs; its head is left as it is."""
    set_seed(config.seed)  # the same dropout masks on a resumed run, whatever ran before
    pairs = pairs_for(model, inputs, spec, config.seed)
    loader = DataLoader(
        PairDataset(inputs.train, pairs),
        batch_size=spec.batch_size,
        shuffle=True,  # Accelerate's seedable sampler: the order depends on (--seed, epoch) only
        collate_fn=PairCollator(inputs.train_collator),
    )
    accumulation = config.gradient_accumulation_steps
    total_steps = (
        math.ceil(len(loader) / accumulation) * spec.epochs
    )  # counted before sharding, as the loop does
    pair_encoder = PairEncoder(encoder_of(model), pooling_of(model, spec))
    started = time.perf_counter()
    with trainable(pair_encoder.encoder):
        optimizer = torch.optim.AdamW(
            [p for p in pair_encoder.parameters() if p.requires_grad],
            lr=spec.lr,
            weight_decay=config.weight_decay,
        )
        scheduler = make_schedule(
            config.scheduler, optimizer, int(config.warmup_ratio * total_steps), total_steps
        )
        prepared, optimizer, loader, scheduler = accelerator.prepare(
            pair_encoder, optimizer, loader, scheduler
        )
        losses, steps = train_pairs(prepared, optimizer, scheduler, loader, spec, config, accelerator)
    accelerator.free_memory()  # the stage's prepared objects are done with; the loop prepares its own
    pair_encoder.encoder.eval()
    return ContrastiveResult(
        pairs=len(pairs),
        positive_pairs=sum(1 for pair in pairs if pair.target == 1.0),
        steps=steps,
        seconds=round(time.perf_counter() - started, 3),
        losses=losses,
    )


def train_pairs(
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    loader: Any,
    spec: ContrastiveSpec,
    config: RunConfig,
    accelerator: Accelerator,
) -> tuple[list[float], int]:
    """The epochs over the pairs: MSE of cosine to target, clipped, accumulated as the run's loop does."""
    model.train()
    losses: list[float] = []
    window: list[torch.Tensor] = []
    steps = 0
    for epoch in range(spec.epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            with accelerator.accumulate(model):
                scores = model(batch["first"], batch["second"])
                loss = F.mse_loss(scores.float(), batch["target"])
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm or math.inf)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window.append(loss.detach())
            if accelerator.sync_gradients:
                steps += 1
                if steps % config.log_steps == 0:
                    losses.append(float(torch.stack(window).mean()))
                    window = []
    if window:
        losses.append(float(torch.stack(window).mean()))
    return losses, steps


@contextmanager
def trainable(module: nn.Module) -> Iterator[None]:
    """Every parameter of ``module`` trainable for the block, then back as the plan froze them."""
    before = {name: p.requires_grad for name, p in module.named_parameters()}
    for parameter in module.parameters():
        parameter.requires_grad_(True)
    try:
        yield
    finally:
        for name, parameter in module.named_parameters():
            parameter.requires_grad_(before[name])
