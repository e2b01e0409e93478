"""Device switches on tiny models: channels_last for CNNs, the attention kernel, torch.compile and gradient
checkpointing."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import quick_train


def test_channels_last_and_attention_kernel_are_applied_and_reported(
    resnet_dir, vit_dir, image_folder, tmp_path
):
    cnn = quick_train(
        "image", "large_similar", resnet_dir, image_folder, tmp_path / "cnn", epochs=1, channels_last=True
    )
    conv = cnn.model.resnet.embedder.embedder.convolution.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert cnn.metrics["speed"]["channels_last"] is True and cnn.metrics["best"]["eval_accuracy"] > 0.5
    vit = quick_train(
        "image",
        "small_similar",
        vit_dir,
        image_folder,
        tmp_path / "vit",
        epochs=1,
        attn_implementation="eager",
    )
    assert vit.model.config._attn_implementation == "eager"
    assert vit.metrics["speed"] == {
        "mixed_precision": "no",
        "attn_implementation": "eager",
        "channels_last": False,  # auto: only CNNs, only on a GPU
        "compile": False,
        "gradient_checkpointing": False,
        "group_by_length": True,
    }


@pytest.mark.slow
def test_compile_trains_a_cached_head_on_cpu(vit_dir, image_folder, tmp_path):
    result = quick_train("image", "small_similar", vit_dir, image_folder, tmp_path, epochs=1, compile=True)
    assert result.metrics["speed"]["compile"] is True and result.metrics["best"]["eval_accuracy"] > 0.5
    assert "flops_per_sample" not in result.metrics["throughput"]  # not counted under compile


def tiny(family: str, **overrides):
    """A tiny BERT or ViT with dropout on, built from its config."""
    from transformers import BertConfig, BertForSequenceClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    sizes = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 37}
    if family == "bert":
        config = BertConfig(vocab_size=50, max_position_embeddings=32, hidden_dropout_prob=0.2, **sizes)
        return BertForSequenceClassification(config), {"input_ids": torch.randint(0, 50, (4, 12))}
    config = ViTConfig(
        image_size=16, patch_size=4, hidden_dropout_prob=0.2, num_labels=3, **sizes, **overrides
    )
    return ViTForImageClassification(config), {"pixel_values": torch.randn(4, 3, 16, 16)}


def loss_and_gradients(family: str, plan: str, checkpointing: bool):
    from peft import LoraConfig, get_peft_model

    from hftl.training.devices import enable_gradient_checkpointing

    model, inputs = tiny(family)
    layers = model.bert.encoder.layer if family == "bert" else model.vit.layers
    if plan == "frozen-early":  # the stem and the first layer frozen (and pinned to eval, as hftl does)
        for module in (model.base_model.embeddings, layers[0]):
            module.requires_grad_(False)
    if plan == "lora":
        targets = ["query", "value"] if family == "bert" else ["q_proj", "v_proj"]
        # random A and B (not B = 0), so that both receive a gradient to compare
        lora = LoraConfig(
            r=4, target_modules=targets, modules_to_save=["classifier"], init_lora_weights=False
        )
        model = get_peft_model(model, lora)
    if checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    torch.manual_seed(1)  # the same dropout masks in both runs; checkpointing replays them
    loss = model(**inputs, labels=torch.tensor([0, 1, 1, 0])).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("family", ["bert", "vit"])
@pytest.mark.parametrize("plan", ["full", "frozen-early", "lora"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(family, plan):
    plain_loss, plain = loss_and_gradients(family, plan, checkpointing=False)
    loss, checkpointed = loss_and_gradients(family, plan, checkpointing=True)
    assert torch.allclose(plain_loss, loss)
    assert plain.keys() == checkpointed.keys() and len(plain) > 2
    for name, grad in plain.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(grad, checkpointed[name], atol=1e-6), name


def test_gradient_checkpointing_recomputes_layers_and_keeps_frozen_inputs_out_of_the_graph():
    from hftl.training.devices import enable_gradient_checkpointing

    model, inputs = tiny("bert")
    enable_gradient_checkpointing(model)
    assert all(layer.gradient_checkpointing for layer in model.bert.encoder.layer)
    model.bert.embeddings.requires_grad_(False)
    hidden = model.bert.embeddings(**inputs)
    assert not hidden.requires_grad  # no hook makes a frozen stem's output require grad


def test_gradient_checkpointing_is_refused_where_it_does_not_apply(resnet_dir, glove_file):
    from transformers import AutoModelForImageClassification

    import hftl
    from hftl.errors import ConfigError
    from hftl.training.devices import enable_gradient_checkpointing

    with pytest.raises(ConfigError, match="ResNetForImageClassification cannot recompute its layers"):
        enable_gradient_checkpointing(AutoModelForImageClassification.from_pretrained(resnet_dir))
    with pytest.raises(ConfigError, match="does not apply to word vectors"):
        hftl.RunConfig(
            task="text", case="small_similar", model=f"vectors:{glove_file}", gradient_checkpointing=True
        )


def test_a_run_with_gradient_checkpointing_trains_the_same_weights(vit_dir, image_folder, tmp_path):
    runs = [
        quick_train(
            "image",
            "large_similar",
            vit_dir,
            image_folder,
            tmp_path / str(flag),
            strategy="partial",
            keep_layers=1,
            epochs=1,
            gradient_checkpointing=flag,
        )
        for flag in (False, True)
    ]
    assert runs[1].metrics["speed"]["gradient_checkpointing"] is True
    assert runs[1].model.vit.layers[2].gradient_checkpointing
    plain, checkpointed = (run.model.state_dict() for run in runs)
    assert all(torch.allclose(plain[name], checkpointed[name], atol=1e-6) for name in plain)
