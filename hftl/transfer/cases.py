"""The four transfer cases as a table of rules, and ``make_plan`` that turns a case (plus overrides) into a plan.

| case            | default strategy | layers kept              | why                                                |
| --------------- | ---------------- | ------------------------ | -------------------------------------------------- |
| small_similar   | head             | all                      | features already fit; too little data to tune more |
| small_different | head             | first N (--keep-layers)  | late features are source-specific; early are generic |
| large_similar   | full             | all                      | enough data to adapt every weight from a good start |
| large_different | full             | all (or --init scratch)  | enough data to move far from the source            |

These are the textbook rules and the printed plan's vocabulary. Where calibration measured otherwise for a family,
the family's default follows the evidence and the plan's reasons say why (``hftl.transfer.defaults``: e.g. small
CNNs use ``partial`` for small_similar and ``full`` for small_different). Strategies (``--strategy`` overrides the
case's): ``head`` trains only the new head (and the neck when the network is
cut); ``partial`` keeps every layer, freezes the stem and the first N layers and trains the rest; ``lora`` freezes the
body and trains LoRA adapters plus neck and head; ``full`` trains everything; ``contrastive`` (text encoders only,
few-shot) first tunes the body on sentence pairs (``hftl.training.contrastive``), then freezes it and trains the head
as ``head`` does, so its blocks read as a head-only plan with a ``ContrastiveSpec``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from hftl.backbones import Backbone
from hftl.backbones.base import block_module
from hftl.config import RunConfig
from hftl.errors import ConfigError
from hftl.settings import AUTO_CASE
from hftl.settings.choices import AUTO_LR, CONTRASTIVE_FAMILIES, contrastive_refusal
from hftl.transfer.conservative import plan_blocks, plan_spec
from hftl.transfer.defaults import DEFAULT_EPOCHS, CaseChoice, case_choice, default_lr
from hftl.transfer.plan import Action, Block, ContrastiveSpec, LoraSpec, TransferPlan


@dataclass(frozen=True)
class CaseRule:
    strategy: str
    truncate: bool
    why: str


CASE_RULES: dict[str, CaseRule] = {
    "small_similar": CaseRule(
        "head", False, "small, similar data: reuse the whole pretrained body as a fixed feature extractor"
    ),
    "small_different": CaseRule(
        "head",
        True,
        "small, different data: keep only the generic early layers, frozen, and train a new head",
    ),
    "large_similar": CaseRule(
        "full", False, "large, similar data: new head, fine-tune every layer from the pretrained weights"
    ),
    "large_different": CaseRule(
        "full", False, "large, different data: new head, fine-tune everything (or train from scratch)"
    ),
}


DIFFERENT_CASES = ("small_different", "large_different")


def start_is_open(config: RunConfig) -> bool:
    """Whether the run's start is left to the source check (``hftl.advisor.source_check``): ``--init auto`` with a
    different case (large_different offers scratch; small_different keeps layers only if they are generic), a
    strategy that trains every weight or none given (a frozen random body would be no transfer at all), and no
    setting that only means something for pretrained weights (L2-SP's anchor, a cut, layer-wise decay, gradual
    unfreezing): those say the user chose to transfer."""
    transfer_only = (
        "l2sp" in (config.regularizer or [])
        or config.keep_layers is not None
        or config.layer_decay is not None
        or config.unfreeze_schedule is not None
    )
    return (
        config.init == "auto"
        and config.case in DIFFERENT_CASES
        and config.strategy in (None, "full")
        and not transfer_only
    )


def cuts(config: RunConfig, measured: CaseChoice | None) -> bool:
    """Whether the plan truncates the network: the textbook's cut applies to the textbook rule (or an explicit
    --strategy); a measured default keeps every layer; partial freezing never cuts."""
    rule = CASE_RULES[config.case]
    strategy = config.strategy or (measured.strategy if measured else rule.strategy)
    return (
        rule.truncate
        and (measured is None or config.strategy is not None)
        and strategy not in ("partial", "contrastive")
    )


def uses_keep_layers(config: RunConfig, measured: CaseChoice | None) -> bool:
    """Whether ``--keep-layers`` means something to this plan: the depth partial freezing keeps frozen, or the
    cut (``cuts``); every other plan keeps and trains every layer, and refuses it."""
    strategy = config.strategy or (measured.strategy if measured else CASE_RULES[config.case].strategy)
    return strategy == "partial" or cuts(config, measured)


def head_reasons(config: RunConfig, model: nn.Module) -> list[str]:
    """What the new head reads and is, when that is not the family's stock head."""
    pooling = getattr(model.config, "classifier_pooling", None)
    if pooling is None:
        return []
    origin = "--pooling" if config.pooling != "auto" else "auto: the pooling the model declares"
    head = getattr(model.config, "classifier_head", "linear")
    head_origin = (
        f"--head {config.head}"
        if config.head != "auto"
        else (
            "auto: a cut CNN's few channels get an MLP, docs/calibration.md" if head != "linear" else "auto"
        )
    )
    return [f"the head ({head}, {head_origin}) reads {pooling}-pooled features ({origin})"]


def make_plan(config: RunConfig, model: nn.Module, backbone: Backbone) -> TransferPlan:
    """Decide, block by block, what the run does to ``model`` (which may live on the meta device)."""
    if config.case == AUTO_CASE:
        raise ConfigError(
            "--case auto is decided from the data: a run resolves it before planning (hftl.advisor.decision); "
            "to see a plan, run `hftl advise` or pass one of " + ", ".join(CASE_RULES)
        )
    rule = CASE_RULES[config.case]
    measured = case_choice(
        backbone.family, config.case, model.config
    )  # where calibration contradicts the textbook
    case_strategy = measured.strategy if measured else rule.strategy
    strategy = config.strategy or case_strategy
    backbone.check_strategy(strategy)
    if strategy == "contrastive":
        check_contrastive(config, backbone)
    num_layers = backbone.num_layers(model.config)
    depth = config.keep_layers if config.keep_layers is not None else backbone.default_keep_layers(num_layers)
    if num_layers == 0:  # nothing between the stem and the head (word vectors): nothing to cut or keep
        if config.keep_layers is not None:
            raise ConfigError(
                f"keep_layers does not apply: this {backbone.family} model has no {backbone.layer_word} stack"
            )
        depth = 0
    elif not 1 <= depth <= num_layers:
        raise ConfigError(
            f"keep_layers={depth} is out of range: this {backbone.family} model has {num_layers} "
            f"{backbone.layer_word}s, so use 1..{num_layers}"
        )
    truncate = cuts(config, measured) and num_layers > 0
    keep = depth if truncate else num_layers
    if config.keep_layers is not None and num_layers and not uses_keep_layers(config, measured):
        raise ConfigError(
            f"--keep-layers {config.keep_layers} does not apply to this plan ({config.case}: {strategy}, every "
            f"{backbone.layer_word} kept and trained): it sets the cut of a small_different run with --strategy "
            "head, or how many layers --strategy partial freezes. Add one of those --strategy values, or leave "
            "--keep-layers out"
        )

    reasons = [rule.why]
    if measured:
        reasons = [
            f"textbook rule: {rule.why} ({rule.strategy!r}); the {backbone.family} default is "
            f"{measured.strategy!r}, {measured.why}"
        ]
    if config.strategy and config.strategy != case_strategy:
        reasons.append(f"--strategy {config.strategy} overrides the case's {case_strategy!r}")
    if config.merge_lora and strategy != "lora":
        reasons.append(f"--merge-lora: nothing to merge, this plan ({strategy}) trains no LoRA adapter")
    if truncate:
        origin = (
            "--keep-layers"
            if config.keep_layers is not None
            else f"the {backbone.family} default (first half)"
        )
        reasons.append(f"keeps {keep} of {num_layers} {backbone.layer_word}s ({origin})")
    if strategy == "partial" and num_layers:
        reasons.append(
            f"freezes the stem and the first {depth} of {num_layers} {backbone.layer_word}s, trains the rest"
        )
    if start_is_open(config):
        reasons.append(
            "--init auto: the run first checks the pretrained features against random weights on the target and "
            "trains the whole network from scratch if they are worse (hftl.advisor.source_check)"
        )
    if config.init == "scratch":
        reasons.append("--init scratch: random weights of the same architecture (the no-transfer baseline)")
        if strategy in ("head", "partial", "lora"):
            reasons.append("frozen random weights are a baseline for comparison, not a transfer")
    reasons += backbone.plan_reasons(config.case, strategy, config.init)
    reasons += head_reasons(config, model)
    contrastive = contrastive_spec(config, model) if strategy == "contrastive" else None
    if contrastive is not None:
        reasons.append(
            "--strategy contrastive: few labelled sentences make many same/different pairs, enough to move the "
            "encoder's embeddings apart by label before a head is fitted (SetFit, Tunstall et al., 2022)"
        )

    def layer_action(index: int) -> Action:
        if index >= keep:
            return "removed"
        if strategy == "full":
            return "trained"
        if strategy == "lora":
            return "lora"
        if strategy == "partial":
            return "frozen" if index < depth else "trained"
        return "frozen"

    stem_action: Action = "trained" if strategy == "full" else "frozen"
    neck_action: Action = "frozen" if strategy in ("head", "contrastive") and not truncate else "trained"
    cut_neck = set(backbone.neck_removed_by_cut(model, keep)) if truncate else set()

    blocks: list[Block] = []
    blocks += [Block(name, "stem", stem_action, _params(model, name)) for name in backbone.stem(model)]
    blocks += [
        Block(name, "layer", layer_action(i), _params(model, name))
        for i, name in enumerate(backbone.layers(model))
    ]
    blocks += [
        Block(name, "neck", "removed" if name in cut_neck else neck_action, _params(model, name))
        for name in backbone.neck(model)
    ]
    blocks += [Block(name, "head", "new", _params(model, name)) for name in backbone.head(model)]

    lora = _lora_spec(config, model, backbone, blocks) if strategy == "lora" else None
    # the loop trains a contrastive plan's head on frozen features: the head's learning rate
    lr = default_lr(backbone.family, head_stage(strategy), config.init, model.config)
    if config.lr == AUTO_LR:
        reasons.append(
            f"--lr auto: an LR range test picks the learning rate before training (starting from {lr:g})"
        )
    elif config.lr is not None:
        lr = config.lr
    conservative = plan_spec(config, strategy, config.init)
    # without data (``hftl plan``) an unset --epochs counts as the default 3; a run settles it before planning
    blocks, conservative_reasons = plan_blocks(blocks, conservative, lr, config.epochs or DEFAULT_EPOCHS)
    reasons += conservative_reasons
    return TransferPlan(
        case=config.case,
        strategy=strategy,
        init=config.init,
        family=backbone.family,
        model=str(config.model),
        layer_word=backbone.layer_word,
        num_layers=num_layers,
        keep_layers=keep,
        lr=lr,
        blocks=tuple(blocks),
        lora=lora,
        reasons=tuple(reasons),
        conservative=conservative,
        contrastive=contrastive,
    )


def head_stage(strategy: str) -> str:
    """The strategy whose defaults the loop's training follows (a contrastive plan's loop trains the head only)."""
    return "head" if strategy == "contrastive" else strategy


def check_contrastive(config: RunConfig, backbone: Backbone) -> None:
    """``--strategy contrastive`` tunes a whole text encoder on pairs: no other family, no cut."""
    if backbone.family not in CONTRASTIVE_FAMILIES:
        raise ConfigError(contrastive_refusal(backbone.family))
    if config.keep_layers is not None:
        raise ConfigError(
            "--keep-layers does not apply to --strategy contrastive: it tunes and keeps every layer; drop the flag"
        )


def contrastive_spec(config: RunConfig, model: nn.Module) -> ContrastiveSpec:
    return ContrastiveSpec(
        iterations=config.contrastive_iterations,
        epochs=config.contrastive_epochs,
        lr=config.contrastive_lr,
        batch_size=config.contrastive_batch_size,
        pooling=getattr(model.config, "classifier_pooling", None) or "pooler",
    )


def measure_blocks(plan: TransferPlan, model: nn.Module) -> TransferPlan:
    """The plan with every kept block's parameter count read from ``model`` as it will train. A plan is made on
    the uncut network (the meta model for ``hftl plan``), where a cut ResNet's head still reads the last stage's
    wider features; measured after ``apply.shape_to_plan``, the printed plan, transfer_plan.json and the model
    card report the blocks that are trained. Removed blocks keep their size in the uncut network."""
    blocks = tuple(
        block if block.action == "removed" else replace(block, params=_params(model, block.name))
        for block in plan.blocks
    )
    return replace(plan, blocks=blocks)


def _lora_spec(config: RunConfig, model: nn.Module, backbone: Backbone, blocks: list[Block]) -> LoraSpec:
    adapted = [b.name for b in blocks if b.action == "lora"]
    if config.lora_target_modules:
        wanted = set(config.lora_target_modules)
        targets = [
            name
            for name, _ in model.named_modules()
            if any(name.startswith(b + ".") for b in adapted) and name.rsplit(".", 1)[-1] in wanted
        ]
    else:
        targets = backbone.lora_targets(model, adapted)
    if not targets:
        hint = f" named {config.lora_target_modules}" if config.lora_target_modules else ""
        raise ConfigError(
            f"LoRA found no modules{hint} to adapt in the kept {backbone.layer_word}s of this model"
        )
    return LoraSpec(
        r=config.lora_r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=tuple(targets),
        modules_to_save=tuple(b.name for b in blocks if b.action in ("trained", "new")),
    )


def _params(model: nn.Module, name: str) -> int:
    module = block_module(model, name)  # None: a block that is a single parameter (a timm ViT's cls_token)
    return (
        sum(p.numel() for p in module.parameters())
        if module is not None
        else model.get_parameter(name).numel()
    )
