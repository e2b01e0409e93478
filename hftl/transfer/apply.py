"""Carry out a TransferPlan on a model: truncate, re-initialise the head, freeze, keep frozen BatchNorm in eval
mode, and wrap in PEFT LoRA when the plan says so.

Freezing is one rule (torchtune's): ``p.requires_grad_(name in trainable)``. Every parameter must belong to a block
of the plan, so an adapter that forgets a module fails loudly instead of silently training or freezing it.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

from torch import nn

from hftl.backbones import Backbone
from hftl.errors import ModelError
from hftl.transfer.plan import TRAINED_ACTIONS, TransferPlan


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)


def apply_plan(plan: TransferPlan, model: nn.Module, backbone: Backbone) -> nn.Module:
    """Apply ``plan`` in place and return the model to train (a ``PeftModel`` for LoRA plans)."""
    shape_to_plan(plan, model, backbone)
    return adapt_to_plan(plan, model)


def shape_to_plan(plan: TransferPlan, model: nn.Module, backbone: Backbone) -> None:
    """Cut the model to the plan's depth and re-initialise its head, in place: the network as it will train,
    before any freezing or LoRA. A run measures its plan on this network (``cases.measure_blocks``), since a cut
    can resize the head (a cut ResNet's head reads the kept stage's narrower features)."""
    if plan.truncated:
        backbone.truncate(model, plan.keep_layers)
    backbone.reset_head(model)


def adapt_to_plan(plan: TransferPlan, model: nn.Module) -> nn.Module:
    """Freeze, wrap in LoRA and pin frozen BatchNorm, on a model ``shape_to_plan`` has cut; returns the model to
    train (a ``PeftModel`` for LoRA plans)."""
    set_trainable(model, plan)
    if plan.lora is not None:
        model = add_lora(model, plan)
    keep_frozen_batchnorm_in_eval(model)
    return model


def block_of(name: str, blocks: list[str]) -> str | None:
    """The plan block a parameter belongs to (longest matching module-path prefix, or the parameter itself)."""
    owner = None
    for block in blocks:
        if (name == block or name.startswith(block + ".")) and (owner is None or len(block) > len(owner)):
            owner = block
    return owner


def set_trainable(model: nn.Module, plan: TransferPlan) -> None:
    kept = [b.name for b in plan.blocks if b.action != "removed"]
    trainable = set(plan.names(*TRAINED_ACTIONS))
    for name, parameter in model.named_parameters():
        owner = block_of(name, kept)
        if owner is None:
            raise ModelError(
                f"parameter {name!r} belongs to no block of the {plan.family} plan; fix the backbone adapter"
            )
        parameter.requires_grad_(owner in trainable)


def add_lora(model: nn.Module, plan: TransferPlan) -> nn.Module:
    """Wrap with PEFT LoRA on the plan's exact target modules; neck and head are trained in full."""
    from peft import LoraConfig, get_peft_model

    assert plan.lora is not None
    is_text = type(model).__name__.endswith("ForSequenceClassification")
    lora_config = LoraConfig(
        r=plan.lora.r,
        lora_alpha=plan.lora.alpha,
        lora_dropout=plan.lora.dropout,
        target_modules=list(plan.lora.target_modules),
        modules_to_save=list(plan.lora.modules_to_save),
        task_type="SEQ_CLS" if is_text else None,
    )
    return get_peft_model(model, lora_config)


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def keep_frozen_batchnorm_in_eval(model: nn.Module) -> int:
    """Frozen BatchNorm layers keep their running statistics: they stay in eval mode whatever ``model.train()``
    is called with. Returns how many layers were pinned."""
    pinned = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.train = types.MethodType(_stay_in_eval, module)
                module.eval()
                pinned += 1
    return pinned


def count_parameters(model: nn.Module) -> ParameterCount:
    params = list(model.parameters())
    return ParameterCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
