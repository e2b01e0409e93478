"""Every transformers model type a built-in family claims gets a plan for every case, and the feature cache's two
halves (frozen prefix, trained suffix) give the model's own logits: a claimed type is a working type.

The other tests measure each family on one model type (BERT, ViT, ResNet); these build a tiny model of every other
type the families list (RoBERTa, ELECTRA with its narrower embeddings, DeiT, DINOv2, ...) from its config.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

from hftl.backbones import available_backbones, backbone_for
from hftl.backbones.base import Cut
from hftl.config import RunConfig
from hftl.transfer.apply import apply_plan
from hftl.transfer.cases import make_plan

LAYERS = 4
TEXT = {"hidden_size": 32, "num_hidden_layers": LAYERS, "num_attention_heads": 2, "intermediate_size": 64}
VIT = {**TEXT, "image_size": 32, "patch_size": 8}
# model type -> (task, tiny config keywords); ELECTRA's embeddings are narrower than its encoder, as in the real ones
TINY: dict[str, tuple[str, dict[str, Any]]] = {
    "bert": ("text", TEXT),
    "roberta": ("text", {**TEXT, "pad_token_id": 1}),
    "xlm-roberta": ("text", {**TEXT, "pad_token_id": 1}),
    "camembert": ("text", {**TEXT, "pad_token_id": 1}),
    "electra": ("text", {**TEXT, "embedding_size": 16}),
    "distilbert": ("text", {"dim": 32, "n_layers": LAYERS, "n_heads": 2, "hidden_dim": 64}),
    "vit": ("image", VIT),
    "deit": ("image", {**VIT, "architectures": ["DeiTForImageClassification"]}),
    "dinov2": ("image", {**{k: v for k, v in VIT.items() if k != "intermediate_size"}, "mlp_ratio": 2}),
    "resnet": ("image", {"embedding_size": 8, "hidden_sizes": [8, 16, 16, 32], "depths": [1, 1, 1, 1]}),
}
# families whose models are not built from a transformers config of their own model type
NOT_FROM_A_CONFIG = {"timm", "word-vectors"}
PLANS = [
    ("small_similar", "head"),
    ("small_different", "head"),
    ("small_different", "partial"),
    ("large_similar", "lora"),
    ("large_different", "full"),
]


def tiny_model(model_type: str) -> tuple[str, torch.nn.Module]:
    task, settings = TINY[model_type]
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, num_labels=3, vocab_size=100, **settings)
    if task == "text":
        return task, AutoModelForSequenceClassification.from_config(config).eval()
    return task, AutoModelForImageClassification.from_config(config).eval()


def test_every_claimed_model_type_is_measured_here():
    claimed = {
        t for family, types in available_backbones().items() if family not in NOT_FROM_A_CONFIG for t in types
    }
    assert claimed == set(TINY)


@pytest.mark.parametrize("model_type", sorted(TINY))
@pytest.mark.parametrize(("case", "strategy"), PLANS)
def test_every_case_plans_and_applies(model_type, case, strategy):
    task, model = tiny_model(model_type)
    backbone = backbone_for(model.config)
    plan = make_plan(RunConfig(task=task, case=case, strategy=strategy, model="tiny"), model, backbone)
    trained = apply_plan(plan, model, backbone)  # every parameter must belong to a block of the plan
    frozen = {b.name for b in plan.blocks if b.action == "frozen"}
    trainable = [name for name, p in trained.named_parameters() if p.requires_grad]
    assert trainable and plan.strategy == strategy
    if strategy == "head":
        assert all(not any(n == f or n.startswith(f + ".") for f in frozen) for n in trainable)
        assert set(b.action for b in plan.blocks if b.kind == "stem") == {"frozen"}
    if case == "small_different" and strategy == "head":
        assert plan.truncated and plan.keep_layers == LAYERS // 2 and backbone.num_layers(model.config) == 2
    if strategy == "lora":
        assert any("lora_" in name for name in trainable)


def batch_for(task: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    if task == "image":
        return {"pixel_values": torch.randn(3, 3, 32, 32, generator=generator)}
    ids = torch.randint(5, 100, (3, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0  # a padded sentence: the cached suffix must mask it as the model does
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("model_type", sorted(TINY))
@pytest.mark.parametrize(
    "cut", [Cut(layers=2), Cut(layers=LAYERS, head_input=True)], ids=["mid", "head-input"]
)
def test_cached_features_give_the_models_own_logits(model_type, cut):
    task, model = tiny_model(model_type)
    backbone = backbone_for(model.config)
    assert backbone.cache_support(model, cut) is None
    batch = batch_for(task)
    with torch.no_grad():
        expected = model(**batch).logits
        features = backbone.forward_prefix(model, batch, cut)
        logits = backbone.forward_suffix(model, features, cut)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


def test_a_distilled_deit_fine_tunes_its_body_under_a_new_head(tmp_path):
    """facebook/deit-*-distilled-* checkpoints are saved as DeiTForImageClassificationWithTeacher, whose two heads
    only predict: hftl loads the body into the class that fine-tunes it, and the plan covers every parameter."""
    from transformers import DeiTConfig, DeiTForImageClassification, DeiTForImageClassificationWithTeacher

    from hftl.sources.hub import load_model_config

    distilled = DeiTForImageClassificationWithTeacher(DeiTConfig(num_labels=5, **VIT))
    distilled.save_pretrained(tmp_path)
    run = RunConfig(task="image", case="small_similar", strategy="head", model=str(tmp_path))
    config = load_model_config(run, ["ant", "bee"])
    assert config.architectures == ["DeiTForImageClassification"]
    model = AutoModelForImageClassification.from_pretrained(
        tmp_path, config=config, ignore_mismatched_sizes=True
    )
    assert type(model) is DeiTForImageClassification and model.classifier.out_features == 2
    body = distilled.deit.state_dict()
    assert all(
        torch.equal(body[k], v) for k, v in model.deit.state_dict().items()
    )  # distillation token included
    backbone = backbone_for(model.config)
    apply_plan(make_plan(run, model, backbone), model, backbone)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "classifier.weight",
        "classifier.bias",
    ]
