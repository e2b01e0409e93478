"""Conservative fine-tuning: keep what the pretrained network knows while the target task is learned.

Decided at planning time (``make_plan`` calls the ``plan_*`` functions here, so the printed plan shows every choice):

- **L2-SP** (Li et al., ICML 2018): ``alpha/2 * |w - w0|^2`` on the body, pulling weights toward their pretrained
  values ``w0`` rather than toward zero, plus plain ``beta/2 * |w|^2`` on the new head. AdamW's own decay toward zero
  is switched off while L2-SP is on (it would pull the other way). For LoRA plans the "body" parameters are the
  adapters, so L2-SP keeps them near their start (the pretrained function).
- **BSS** (Chen et al., NeurIPS 2019, batch spectral shrinkage): ``eta * sum of the k smallest squared singular
  values`` of each batch's feature matrix (the input of the head), which suppresses the untransferable directions.
- **Layer-wise lr decay**: a block's peak lr is ``lr * decay^depth``, depth counted from the top: head and neck 0,
  the top kept layer 1, ..., the first layer K, the stem K + 1 (the BEiT/ELECTRA rule). ``--head-lr`` gives the new
  head its own lr (discriminative head/body rates).
- **Gradual unfreezing** (ULMFiT): the head (and neck) train from the start; every N epochs one more block from the
  top joins, down to the stem, until the strategy's trainable set is reached.

At training time ``ConservativeTraining`` adds the penalties to the loss and carries out the unfreezing schedule.
Blocks waiting to be unfrozen keep ``requires_grad=True`` from the start, so DDP registers (and syncs) their
gradients and the optimizer holds them; until their epoch their gradients are dropped before clipping and the
optimizer step (AdamW skips parameters without a gradient, weight decay included) and their BatchNorm layers stay
in eval mode. This costs their backward pass during the frozen epochs but needs no re-wrapping of the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hftl.config import RunConfig
from hftl.errors import ConfigError
from hftl.transfer.plan import Block, ConservativeSpec, TransferPlan

PEFT_PREFIX = "base_model.model."
TRAINED = ("trained", "lora", "new")


# --- planning ---------------------------------------------------------------------------------------------------
def plan_spec(config: RunConfig, strategy: str, init: str) -> ConservativeSpec | None:
    """The conservative settings of a run, or None when none is asked for."""
    regularizers = tuple(dict.fromkeys(config.regularizer or ()))
    if not (regularizers or config.layer_decay or config.head_lr or config.unfreeze_schedule):
        return None
    if "l2sp" in regularizers and init == "scratch":
        raise ConfigError(
            "--regularizer l2sp pulls weights toward their pretrained values, and --init scratch has none; "
            "drop one of them (bss works with either)"
        )
    return ConservativeSpec(
        regularizers=regularizers,
        l2sp_alpha=config.l2sp_alpha if "l2sp" in regularizers else 0.0,
        l2sp_beta=config.l2sp_beta if "l2sp" in regularizers else 0.0,
        bss_eta=config.bss_eta if "bss" in regularizers else 0.0,
        bss_k=config.bss_k,
        layer_decay=config.layer_decay,
        head_lr=config.head_lr,
        unfreeze_every=config.unfreeze_schedule,
    )


def plan_blocks(
    blocks: Sequence[Block], spec: ConservativeSpec | None, lr: float, epochs: int
) -> tuple[list[Block], list[str]]:
    """Blocks with their per-block lr and unfreezing epoch filled in, and the reasons to print."""
    if spec is None:
        return list(blocks), []
    reasons: list[str] = []
    depths = block_depths(blocks)
    out = []
    per_block_lr = spec.layer_decay is not None or spec.head_lr is not None
    schedule = unfreeze_epochs(blocks, spec.unfreeze_every) if spec.unfreeze_every else {}
    for block in blocks:
        block_lr = None
        if per_block_lr and block.action in TRAINED:
            block_lr = lr * (spec.layer_decay or 1.0) ** depths[block.name]
            if block.kind == "head" and spec.head_lr is not None:
                block_lr = spec.head_lr
        out.append(
            Block(block.name, block.kind, block.action, block.params, block_lr, schedule.get(block.name, 0))
        )
    if spec.unfreeze_every:
        if not schedule:
            raise ConfigError(
                "--unfreeze-schedule has nothing to unfreeze: only the head (and neck) are trained in this plan; "
                "use --strategy full, partial or lora"
            )
        late = [name for name, epoch in schedule.items() if epoch >= epochs]
        if late:
            reasons.append(
                f"gradual unfreezing reaches only {len(schedule) - len(late)} of {len(schedule)} blocks in "
                f"{epochs} epochs ({', '.join(late)} stay frozen); raise --epochs or lower --unfreeze-schedule"
            )
    return out, reasons


def block_depths(blocks: Sequence[Block]) -> dict[str, int]:
    """Depth from the top, the layer-decay exponent: head and neck 0, kept layers K..1 (top = 1), stem K + 1."""
    kept_layers = [b.name for b in blocks if b.kind == "layer" and b.action != "removed"]
    depths = {name: len(kept_layers) - i for i, name in enumerate(kept_layers)}
    for block in blocks:
        if block.kind in ("head", "neck"):
            depths[block.name] = 0
        elif block.kind == "stem":
            depths[block.name] = len(kept_layers) + 1
        elif block.name not in depths:  # removed layers
            depths[block.name] = 0
    return depths


def unfreeze_epochs(blocks: Sequence[Block], every: int) -> dict[str, int]:
    """Gradual unfreezing order: trained layers from the top down, then the stem; the n-th joins at epoch n*every."""
    candidates = [b for b in blocks if b.action in ("trained", "lora") and b.kind in ("layer", "stem")]
    order = [[b.name] for b in candidates if b.kind == "layer"][::-1]
    stem = [b.name for b in candidates if b.kind == "stem"]
    if stem:
        order.append(stem)
    schedule: dict[str, int] = {}
    for position, group in enumerate(order, start=1):
        for name in group:
            schedule[name] = position * every
    return schedule


# --- training -----------------------------------------------------------------------------------------------------
def block_of_parameter(name: str, blocks: Sequence[str]) -> str | None:
    """The plan block a parameter belongs to, PEFT wrapping included (longest module-path prefix)."""
    name = name.removeprefix(PEFT_PREFIX)
    owner = None
    for block in blocks:
        if (name == block or name.startswith(block + ".")) and (owner is None or len(block) > len(owner)):
            owner = block
    return owner


def parameter_groups(model: nn.Module, plan: TransferPlan, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: one per (block lr, decayed or not). Biases and norms get no
    decay; with L2-SP nothing gets AdamW decay (the penalty replaces it)."""
    spec = plan.conservative
    by_name = {b.name: b for b in plan.blocks}
    decay = 0.0 if spec is not None and "l2sp" in spec.regularizers else weight_decay
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        block = by_name.get(block_of_parameter(name, list(by_name)) or "")
        lr = block.lr if block is not None and block.lr is not None else plan.lr
        groups.setdefault((lr, parameter.ndim >= 2), []).append(parameter)
    return [
        {"params": params, "lr": lr, "weight_decay": decay if decayed else 0.0}
        for (lr, decayed), params in groups.items()
    ]


class ConservativeTraining:
    """The training-time side of a plan's ``ConservativeSpec``: penalties and the unfreezing schedule.

    Built on the unwrapped model after ``accelerator.prepare`` (parameters are then on their device) and before a
    checkpoint is resumed, so ``w0`` is always the pretrained starting point.
    """

    def __init__(self, model: nn.Module, plan: TransferPlan):
        assert plan.conservative is not None
        self.spec = plan.conservative
        blocks = {b.name: b for b in plan.blocks}
        names = list(blocks)
        self.body: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.head: list[nn.Parameter] = []
        self.waiting: dict[str, list[nn.Parameter]] = {}  # block -> its parameters, while not yet unfrozen
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            block = blocks.get(block_of_parameter(name, names) or "")
            if block is not None and block.kind == "head":
                self.head.append(parameter)
            else:
                self.body.append((parameter, parameter.detach().clone()))
            if block is not None and block.unfreeze_epoch > 0:
                self.waiting.setdefault(block.name, []).append(parameter)
        self.schedule = {name: blocks[name].unfreeze_epoch for name in self.waiting}
        # blocks that are single parameters (a timm ViT's cls_token) have no BatchNorm to hold: module-less
        self.modules = {name: m for name in self.waiting if (m := _find_module(model, name)) is not None}
        self.epoch = 0
        self._features: torch.Tensor | None = None
        self._hook = None
        if "bss" in self.spec.regularizers:
            head_block = next(b.name for b in plan.blocks if b.kind == "head")
            self._hook = _find_module(model, head_block).register_forward_pre_hook(self._keep_features)

    @classmethod
    def build(cls, model: nn.Module, plan: TransferPlan | None) -> ConservativeTraining | None:
        return cls(model, plan) if plan is not None and plan.conservative is not None else None

    # --- unfreezing ---------------------------------------------------------------------------------------------
    def frozen_blocks(self, epoch: int | None = None) -> list[str]:
        """Blocks still waiting for their epoch."""
        epoch = self.epoch if epoch is None else epoch
        return [name for name, start in self.schedule.items() if start > epoch]

    def start_epoch(self, epoch: int) -> list[str]:
        """Call after ``model.train()``: keeps waiting blocks' BatchNorm statistics fixed; returns the blocks that
        join training at this epoch."""
        self.epoch = epoch
        for name in self.frozen_blocks():
            for module in self.modules[name].modules() if name in self.modules else ():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return [name for name, start in self.schedule.items() if start == epoch and epoch > 0]

    def drop_frozen_gradients(self) -> None:
        """Before clipping and the optimizer step: waiting blocks get no update (their gradients were synced)."""
        for name in self.frozen_blocks():
            for parameter in self.waiting[name]:
                parameter.grad = None

    # --- penalties ----------------------------------------------------------------------------------------------
    def _keep_features(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if module.training and args:
            self._features = args[0]

    def penalty(self) -> torch.Tensor | float:
        """The regularizers' sum for the current batch (0.0 when none is on)."""
        total: torch.Tensor | float = 0.0
        if self.spec.l2sp_alpha > 0 and self.body:
            total = total + self.spec.l2sp_alpha / 2 * sum((p - p0).pow(2).sum() for p, p0 in self.body)
        if self.spec.l2sp_beta > 0 and self.head:
            total = total + self.spec.l2sp_beta / 2 * sum(p.pow(2).sum() for p in self.head)
        if self.spec.bss_eta > 0 and self._features is not None:
            total = total + self.spec.bss_eta * batch_spectral_shrinkage(self._features, self.spec.bss_k)
            self._features = None
        return total

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()


def batch_spectral_shrinkage(features: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Sum of the ``k`` smallest squared singular values of the (batch x dims) feature matrix."""
    matrix = features.reshape(features.shape[0], -1).float()
    singular = torch.linalg.svdvals(matrix)  # descending
    return singular[-min(k, singular.numel()) :].pow(2).sum()


def _find_module(model: nn.Module, name: str) -> nn.Module | None:
    """The module of a plan block (PEFT wrapping included); None for a block that is a single parameter."""
    for candidate in (name, PEFT_PREFIX + name):
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            with contextlib.suppress(AttributeError):
                model.get_parameter(candidate)
                return None
    raise ConfigError(f"module {name!r} of the plan is not in the model")


__all__ = [
    "ConservativeTraining",
    "batch_spectral_shrinkage",
    "block_depths",
    "block_of_parameter",
    "parameter_groups",
    "plan_blocks",
    "plan_spec",
    "unfreeze_epochs",
]
