"""The case advisor: pick one of the four transfer cases from the data (``hftl advise``, ``--case auto``).

It measures two things and applies three documented, overridable rules.

**Size.** ``examples per class = training examples / classes``. The dataset is *small* when this is below
``--advise-small-per-class`` (default 1000, the usual rule of thumb for fine-tuning a whole network).

**Similarity.** One forward pass over (at most ``--advise-max-samples``) training examples gives the pooled
features after every layer (``hftl.advisor.probes``: the first token for transformers, which is what their classification
heads read, or ``--advise-pooling mean``; global average for ResNet stages); LogME scores each depth. LogME values depend on the feature dimension
and the label set, so the advisor never compares them to a fixed absolute value. Instead it runs the same pass
through the *same architecture with random weights* and uses the **gain** (pretrained minus random LogME, nats per
example, same dims and same examples), plus the depth profile:

- *similar* when the top layer's gain is at least ``--advise-similar-logme`` (default 0.05) **and** the top layer
  scores within ``--advise-depth-margin`` (default 0.05) of the best depth: the pretrained top features already fit
  the target; an earlier layer that scores clearly better means the late features are source-specific;
- otherwise *different*.

**Decision.** size x similarity -> ``small_similar | small_different | large_similar | large_different``. For
``small_different`` the cut is the depth with the highest pretrained LogME (the shallowest on a tie): keep the
first N layers. H-score and, when the checkpoint has its own classifier, LEEP (from that head's source-class
probabilities) are reported beside LogME; they do not change the decision.

Several candidate models (``--model a,b,c``) are ranked by the LogME of the features their advised setup trains
on (the top layer, or the cut for ``small_different``), the LogME paper's model-selection criterion.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hftl.advisor.probes import DepthFeatures
from hftl.advisor.scores import h_score, logme
from hftl.advisor.trials import TrialsReport
from hftl.config import RunConfig
from hftl.data.loading import Splits
from hftl.errors import ConfigError
from hftl.outputs.artifacts import ADVICE_JSON, ADVICE_MD
from hftl.outputs.files import write_text

# the transformers classification heads hftl trains (BERT, DistilBERT, ViT) read the first token, so the advisor
# scores that token by default: features a frozen body would hand to the new head. (Mean pooling can score a
# sentence-embedding model higher than its first token deserves: all-MiniLM-L6's [CLS] barely varies.)
DEFAULT_POOLING = "cls"


@dataclass(frozen=True)
class Thresholds:
    """The advisor's rules' numbers (RunConfig's ``advise_*`` fields)."""

    small_per_class: int = 1000
    similar_logme: float = 0.05
    depth_margin: float = 0.05

    @classmethod
    def from_config(cls, config: RunConfig) -> Thresholds:
        return cls(config.advise_small_per_class, config.advise_similar_logme, config.advise_depth_margin)


@dataclass(frozen=True)
class DatasetSize:
    """How much labelled training data there is."""

    total: int
    per_class: dict[str, int]

    @property
    def classes(self) -> int:
        return len(self.per_class)

    @property
    def mean_per_class(self) -> float:
        return self.total / max(self.classes, 1)


@dataclass(frozen=True)
class DepthScore:
    """Transferability of the pooled features after one layer (depth 1 = the first layer/stage)."""

    depth: int
    logme: float
    logme_random: float | None = None
    h_score: float | None = None

    @property
    def gain(self) -> float | None:
        """Pretrained minus random-weights LogME: what pretraining adds at this depth (nats per example)."""
        return None if self.logme_random is None else self.logme - self.logme_random


@dataclass(frozen=True)
class Decision:
    """The advised case, the cut for small_different, and why."""

    case: str
    keep_layers: int | None
    small: bool
    similar: bool
    top_depth: int
    best_depth: int
    rationale: tuple[str, ...]


def decide(
    size: DatasetSize, scores: list[DepthScore], thresholds: Thresholds, layer_word: str = "layer"
) -> Decision:
    """Apply the documented rules (module docstring) to measured size and depth-wise scores."""
    if not scores:
        raise ConfigError("the advisor needs the scores of at least one depth")
    by_depth = sorted(scores, key=lambda s: s.depth)
    top = by_depth[-1]
    best = max(by_depth, key=lambda s: (s.logme, -s.depth))  # the shallowest of equal scores
    small = size.mean_per_class < thresholds.small_per_class
    rationale = [
        f"size: {size.total:,} training examples in {size.classes} classes = {size.mean_per_class:,.1f} per "
        f"class {'<' if small else '>='} {thresholds.small_per_class} (--advise-small-per-class) -> "
        f"{'small' if small else 'large'}"
    ]
    gain_ok = top.gain is not None and top.gain >= thresholds.similar_logme
    depth_ok = top.logme >= best.logme - thresholds.depth_margin
    similar = gain_ok and depth_ok
    gain_text = (
        "no random-weights baseline"
        if top.gain is None
        else f"gain over random weights {top.gain:+.4f} {'>=' if gain_ok else '<'} {thresholds.similar_logme:g} "
        "(--advise-similar-logme)"
    )
    rationale.append(
        f"similarity: top {layer_word} ({top.depth}) LogME {top.logme:.4f}, {gain_text}; best depth "
        f"{best.depth} LogME {best.logme:.4f}, top is {best.logme - top.logme:.4f} below it "
        f"({'<=' if depth_ok else '>'} {thresholds.depth_margin:g}, --advise-depth-margin) -> "
        f"{'similar' if similar else 'different'}"
    )
    case = f"{'small' if small else 'large'}_{'similar' if similar else 'different'}"
    keep = None
    if case == "small_different":
        keep = best.depth
        rationale.append(
            f"cut: keep the first {keep} {layer_word}s, where the pretrained LogME peaks"
            + (" (the top itself: nothing is cut)" if keep == top.depth else "")
        )
    if all(s.gain is not None and s.gain <= 0 for s in by_depth):
        rationale.append(
            "pretrained features are no better than random weights at any depth: with enough data consider "
            "--case large_different --init scratch"
        )
    return Decision(case, keep, small, similar, top.depth, best.depth, tuple(rationale))


@dataclass
class Advice:
    """Everything the advisor measured for one model and what it concluded."""

    model: str
    family: str
    layer_word: str
    size: DatasetSize
    samples: int
    scores: list[DepthScore]
    decision: Decision
    thresholds: Thresholds
    leep: float | None = None
    pooling: str = "cls"
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The LogME of the features the advised setup trains on: the ranking key between models."""
        depth = self.decision.keep_layers or self.decision.top_depth
        return next(s.logme for s in self.scores if s.depth == depth)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["size"]["mean_per_class"] = self.size.mean_per_class
        data["score"] = self.score
        for item, score in zip(data["scores"], self.scores, strict=True):
            item["gain"] = score.gain
        return data

    def render(self) -> str:
        """Plain-text rationale (also the body of the Markdown report)."""
        lines = [
            f"Advice for {self.model} ({self.family}): case={self.decision.case}"
            + (f" keep_layers={self.decision.keep_layers}" if self.decision.keep_layers else ""),
            f"  features of {self.samples} training examples after each {self.layer_word}, pooled by "
            f"{'the first token' if self.pooling == 'cls' else self.pooling}",
            f"  {'depth':>5} {'LogME':>9} {'random':>9} {'gain':>9} {'H-score':>9}",
        ]
        for s in self.scores:
            lines.append(
                f"  {s.depth:>5} {s.logme:>9.4f} {_fmt(s.logme_random):>9} {_fmt(s.gain, '+.4f'):>9} "
                f"{_fmt(s.h_score):>9}"
            )
        lines.append(
            "  LEEP (pretrained head): "
            + (f"{self.leep:.4f}" if self.leep is not None else "n/a (the checkpoint has no classifier)")
        )
        lines.extend(f"  {line}" for line in self.decision.rationale)
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


# --- measuring ----------------------------------------------------------------------------------------------------
def measure_size(splits: Splits) -> DatasetSize:
    counts = np.bincount(np.asarray(splits.train[splits.label_column]), minlength=len(splits.labels))
    return DatasetSize(
        int(counts.sum()), {name: int(c) for name, c in zip(splits.labels, counts, strict=True)}
    )


def score_depths(pretrained: DepthFeatures, random: DepthFeatures | None) -> list[DepthScore]:
    """LogME (pretrained and random weights) and H-score at every depth."""
    scores = []
    for depth in pretrained.depths:
        features = pretrained.features[depth]
        scores.append(
            DepthScore(
                depth,
                logme(features, pretrained.labels),
                None if random is None else logme(random.features[depth], random.labels),
                h_score(features, pretrained.labels),
            )
        )
    return scores


# --- reporting ----------------------------------------------------------------------------------------------------
def render_ranking(advices: list[Advice]) -> str:
    lines = ["Candidate models, best first (LogME of the features the advised setup trains on):"]
    for rank, advice in enumerate(advices, start=1):
        cut = f" keep_layers={advice.decision.keep_layers}" if advice.decision.keep_layers else ""
        lines.append(f"  {rank}. {advice.model}: LogME {advice.score:.4f} -> {advice.decision.case}{cut}")
    return "\n".join(lines)


def render_markdown(advices: list[Advice]) -> str:
    first = advices[0]
    lines = [
        "# hftl advice",
        "",
        f"**Recommended:** `--model {first.model} --case {first.decision.case}`"
        + (f" `--keep-layers {first.decision.keep_layers}`" if first.decision.keep_layers else ""),
        "",
        f"Thresholds: small below {first.thresholds.small_per_class} examples per class; similar when the top "
        f"layer's LogME gain over random weights is at least {first.thresholds.similar_logme:g} and the top is "
        f"within {first.thresholds.depth_margin:g} of the best depth.",
        "",
    ]
    if len(advices) > 1:
        lines += ["| rank | model | LogME | case |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {i} | `{a.model}` | {a.score:.4f} | {a.decision.case} |"
            for i, a in enumerate(advices, start=1)
        ]
        lines.append("")
    for advice in advices:
        lines += [f"## {advice.model} ({advice.family})", ""]
        lines += [f"- {line}" for line in (*advice.decision.rationale, *advice.notes)]
        lines.append(
            "- LEEP (pretrained head): "
            + (f"{advice.leep:.4f}" if advice.leep is not None else "n/a (the checkpoint has no classifier)")
        )
        lines += [
            "",
            "| depth | LogME | random weights | gain | H-score |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {s.depth} | {s.logme:.4f} | {_fmt(s.logme_random)} | {_fmt(s.gain, '+.4f')} | {_fmt(s.h_score)} |"
            for s in advice.scores
        ]
        lines.append("")
    return "\n".join(lines)


def write_advice(
    output_dir: str | Path, advices: list[Advice], trials: TrialsReport | None = None
) -> tuple[Path, Path]:
    """``advice.json`` (every number) and ``advice.md`` (the readable rationale) in ``output_dir``: the LogME
    advice per model and, when they ran, the trials that decide."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"models": [advice.to_dict() for advice in advices]}
    if trials is not None:
        pick = trials.candidate()
        payload["recommended"] = {
            "model": advices[0].model if advices else None,
            "case": pick.case,
            "strategy": pick.strategy,
            "init": pick.init,
            "keep_layers": None,
            "by": "trials",
        }
        payload["trials"] = trials.to_dict()
    else:
        payload["recommended"] = {
            "model": advices[0].model,
            "case": advices[0].decision.case,
            "keep_layers": advices[0].decision.keep_layers,
            "by": "rules",
        }
    text = render_markdown(advices) if advices else "# Advice\n\n"
    if trials is not None:
        text += "\n## Trials (these decide)\n\n```\n" + trials.render() + "\n```\n"
    json_path, md_path = output_dir / ADVICE_JSON, output_dir / ADVICE_MD
    write_text(json_path, json.dumps(payload, indent=2) + "\n")  # atomic: links replaced, not written through
    write_text(md_path, text)
    return json_path, md_path


__all__ = [
    "Advice",
    "DatasetSize",
    "Decision",
    "DepthScore",
    "Thresholds",
    "decide",
    "measure_size",
    "render_markdown",
    "write_advice",
]
