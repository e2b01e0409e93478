"""TransferPlan: what a run does to the pretrained network, as data.

The plan lists every block of the model (stem, each layer, neck, head) with one action: ``frozen``, ``trained``,
``lora`` (frozen, with trained low-rank adapters), ``new`` (re-initialised head, trained) or ``removed``
(truncated away). ``hftl.transfer.apply.apply_plan`` carries it out; printing, saving and tests all read this object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Action = Literal["frozen", "trained", "lora", "new", "removed"]
Kind = Literal["stem", "layer", "neck", "head"]
TRAINED_ACTIONS = ("trained", "new")


@dataclass(frozen=True)
class Block:
    """One unit of the network the plan acts on, named by its module path."""

    name: str
    kind: Kind
    action: Action
    params: int = 0
    # conservative training; the defaults mean "off", so plans saved before these fields still load
    lr: float | None = None  # this block's peak learning rate when it differs by block (layer decay, head lr)
    unfreeze_epoch: int = 0  # gradual unfreezing: trained from this epoch on (0-based; 0 = from the start)


@dataclass(frozen=True)
class LoraSpec:
    """PEFT LoRA settings resolved to exact module names."""

    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]
    modules_to_save: tuple[str, ...]


@dataclass(frozen=True)
class ConservativeSpec:
    """Conservative fine-tuning settings resolved by ``make_plan`` (see ``hftl.transfer.conservative``)."""

    regularizers: tuple[str, ...] = ()  # "l2sp", "bss"
    l2sp_alpha: float = 0.0  # body: alpha/2 * |w - w_pretrained|^2
    l2sp_beta: float = 0.0  # new head: beta/2 * |w|^2
    bss_eta: float = 0.0  # eta * sum of the k smallest squared singular values of the batch features
    bss_k: int = 1
    layer_decay: float | None = None
    head_lr: float | None = None
    unfreeze_every: int | None = None  # one more block from the top every N epochs

    def describe(self) -> list[str]:
        """One readable line per active setting, for the printed plan."""
        lines = []
        if "l2sp" in self.regularizers:
            lines.append(
                f"L2-SP: alpha={self.l2sp_alpha:g} * |w - w_pretrained|^2 / 2 on the body, "
                f"beta={self.l2sp_beta:g} * |w|^2 / 2 on the new head (AdamW weight decay off)"
            )
        if "bss" in self.regularizers:
            lines.append(
                f"BSS: eta={self.bss_eta:g} * sum of the {self.bss_k} smallest squared singular values "
                "of each batch's head-input features"
            )
        if self.layer_decay is not None:
            lines.append(f"layer-wise lr decay {self.layer_decay:g}: lr * decay^(depth from the top)")
        if self.head_lr is not None:
            lines.append(f"head lr {self.head_lr:g}")
        if self.unfreeze_every is not None:
            lines.append(
                f"gradual unfreezing: head (and neck) first, then one more block from the top every "
                f"{self.unfreeze_every} epoch(s)"
            )
        return lines


@dataclass(frozen=True)
class ContrastiveSpec:
    """The contrastive stage of ``--strategy contrastive`` (SetFit's recipe): before the head is trained, the
    encoder is tuned on sentence pairs of the training examples (same label: target cosine 1, different: 0)."""

    iterations: int  # pair-generation rounds: each gives every example one positive and one negative partner
    epochs: int
    lr: float
    batch_size: int
    pooling: str  # how a sentence becomes one vector (the classifier's own pooling)
    loss: str = "cosine similarity (MSE to 1 for same label, 0 for different)"

    def describe(self) -> str:
        return (
            f"stage 1, contrastive: the encoder is tuned on {self.iterations} x 2 x N sentence pairs of the "
            f"training examples ({self.loss}, {self.pooling}-pooled), {self.epochs} epoch(s), lr {self.lr:g}, "
            f"batch {self.batch_size}; stage 2: it is frozen and the new head trained on its embeddings"
        )


@dataclass(frozen=True)
class TransferPlan:
    """The decisions of one run: case, strategy, init, and an action per block."""

    case: str
    strategy: str
    init: str
    family: str
    model: str
    layer_word: str
    num_layers: int
    keep_layers: int
    lr: float
    blocks: tuple[Block, ...]
    lora: LoraSpec | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)
    conservative: ConservativeSpec | None = None  # None = plain fine-tuning
    contrastive: ContrastiveSpec | None = None  # --strategy contrastive: the stage before the head is trained

    @property
    def truncated(self) -> bool:
        return self.keep_layers < self.num_layers

    def names(self, *actions: Action) -> list[str]:
        """Module paths of the blocks with any of ``actions``."""
        return [block.name for block in self.blocks if block.action in actions]

    def frozen_prefix(self) -> list[str]:
        """The leading frozen blocks (stem first): the part of the network whose outputs never change."""
        prefix = []
        for block in self.blocks:
            if block.action != "frozen":
                break
            prefix.append(block.name)
        return prefix

    # --- persistence -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferPlan:
        data = dict(data)
        data["blocks"] = tuple(Block(**block) for block in data["blocks"])
        if data.get("lora"):
            lora = dict(data["lora"])
            lora["target_modules"] = tuple(lora["target_modules"])
            lora["modules_to_save"] = tuple(lora["modules_to_save"])
            data["lora"] = LoraSpec(**lora)
        data["reasons"] = tuple(data.get("reasons", ()))
        if data.get("conservative"):
            spec = dict(data["conservative"])
            spec["regularizers"] = tuple(spec.get("regularizers", ()))
            data["conservative"] = ConservativeSpec(**spec)
        if data.get("contrastive"):
            data["contrastive"] = ContrastiveSpec(**data["contrastive"])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TransferPlan:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # --- display -----------------------------------------------------------------------------------------------
    def render(self, trainable: int | None = None, total: int | None = None) -> str:
        """A readable table: one row per run of consecutive blocks with the same action."""
        lines = [
            f"Transfer plan: case={self.case} strategy={self.strategy} init={self.init} lr={self.lr:g}",
            f"  model: {self.model} ({self.family}, {self.num_layers} {self.layer_word}s"
            + (f", keeping the first {self.keep_layers})" if self.truncated else ")"),
        ]
        rows = _grouped_rows(self.blocks)
        width = max(len(row[0]) for row in rows) + 2
        texts = {**_ACTION_TEXT, **(_CONTRASTIVE_TEXT if self.contrastive is not None else {})}
        for name, action, params, block in rows:
            shown = "-" if action == "removed" else _human(params)
            lines.append(f"  {name:<{width}}{texts[action]:<36}{shown:>9}{_schedule_text(block)}")
        if self.lora is not None:
            lines.append(
                f"  LoRA r={self.lora.r} alpha={self.lora.alpha} dropout={self.lora.dropout} on "
                f"{len(self.lora.target_modules)} modules ({_suffixes(self.lora.target_modules)}); "
                f"trained in full: {', '.join(self.lora.modules_to_save)}"
            )
        if trainable is not None and total:
            lines.append(
                f"  trainable parameters: {trainable:,} / {total:,} ({100.0 * trainable / total:.2f}%)"
            )
        if self.conservative is not None:
            lines.extend(f"  conservative: {line}" for line in self.conservative.describe())
        if self.contrastive is not None:
            lines.append(f"  {self.contrastive.describe()}")
        lines.extend(f"  why: {reason}" for reason in self.reasons)
        return "\n".join(lines)


_ACTION_TEXT = {
    "frozen": "frozen (pretrained, not trained)",
    "trained": "trained",
    "lora": "frozen + LoRA adapters trained",
    "new": "new head, trained",
    "removed": "removed (truncated)",
}

# a contrastive plan's frozen blocks were tuned on sentence pairs first (stage 1), then frozen for the head
_CONTRASTIVE_TEXT = {"frozen": "tuned on pairs, then frozen"}


def _schedule_text(block: Block) -> str:
    """The per-block learning rate and unfreezing epoch, when the plan sets them."""
    parts = []
    if block.lr is not None and block.action not in ("frozen", "removed"):
        parts.append(f"lr {block.lr:.3g}")
    if block.unfreeze_epoch:
        parts.append(f"from epoch {block.unfreeze_epoch + 1}")
    return ("  " + ", ".join(parts)) if parts else ""


def _same_row(a: Block, b: Block) -> bool:
    return a.action == b.action and a.lr == b.lr and a.unfreeze_epoch == b.unfreeze_epoch


def _grouped_rows(blocks: Iterable[Block]) -> list[tuple[str, str, int, Block]]:
    rows: list[tuple[str, str, int, Block]] = []
    run: list[Block] = []

    def flush() -> None:
        if not run:
            return
        if len(run) == 1:
            name = run[0].name
        else:
            stem, _, first = run[0].name.rpartition(".")
            name = f"{stem}.{first}-{run[-1].name.rpartition('.')[2]}"
        rows.append((name, run[0].action, sum(b.params for b in run), run[0]))
        run.clear()

    for block in blocks:
        if run and (block.kind != "layer" or run[0].kind != "layer" or not _same_row(block, run[0])):
            flush()
        run.append(block)
        if block.kind != "layer":
            flush()
    flush()
    return rows


def _human(count: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def _suffixes(names: Iterable[str]) -> str:
    return ", ".join(sorted({name.rsplit(".", 1)[-1] for name in names}))
