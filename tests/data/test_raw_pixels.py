"""Image batches reach the model as raw uint8 pixels: the model normalises them once, on its device, exactly as the
image processor does; floating pixels (a processor's output) pass untouched; a LoRA wrapper normalises through
each of its entries; hooking twice adds nothing."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoImageProcessor, AutoModelForImageClassification

from hftl.data.image_stats import ImageStats
from hftl.data.raw_pixels import accept_raw_pixels


def hooks(module: torch.nn.Module) -> int:
    return len(module._forward_pre_hooks)


def loaded(path):
    processor = AutoImageProcessor.from_pretrained(path)
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    stats = ImageStats.from_processor(processor)
    raw = torch.randint(0, 256, (2, 3, stats.height, stats.width), dtype=torch.uint8)
    return model, processor, stats, raw


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_a_model_normalises_raw_pixels_once_as_the_processor_does(family, model_dirs):
    model, processor, stats, raw = loaded(model_dirs[family])
    as_processed = processor(
        list(raw.permute(0, 2, 3, 1).numpy()), do_resize=False, do_center_crop=False, return_tensors="pt"
    )["pixel_values"]
    assert torch.allclose(stats.normalise(raw), as_processed, atol=1e-6)
    floats = torch.randn(2, 3, stats.height, stats.width)
    with torch.no_grad():
        expected, plain = model(pixel_values=stats.normalise(raw)).logits, model(pixel_values=floats).logits
        assert accept_raw_pixels(model, stats) is model and hooks(model) == 1
        assert torch.equal(model(pixel_values=raw).logits, expected)
        assert torch.equal(model(raw).logits, expected)  # positional, as a task model calls its base model
        assert torch.equal(model(pixel_values=floats).logits, plain)  # floats are already normalised


def test_a_lora_model_normalises_raw_pixels_through_each_entry(model_dirs):
    model, _, stats, raw = loaded(model_dirs["vit"])
    accept_raw_pixels(model, stats)  # hooked before it is wrapped: the wrapper must still get its own hook
    lora = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])
    )
    with torch.no_grad():
        expected = lora(pixel_values=stats.normalise(raw)).logits
        accept_raw_pixels(lora, stats)
        assert hooks(lora) == 1 and hooks(lora.get_base_model()) == 1
        assert torch.equal(lora(pixel_values=raw).logits, expected)
        # the LoraModel inside runs the task model without the wrapper's hooks
        assert torch.equal(lora.base_model(pixel_values=raw).logits, expected)
        assert torch.equal(lora.get_base_model()(pixel_values=raw).logits, expected)


@pytest.mark.parametrize(
    "case", ["large_similar", "small_similar"]
)  # pixels through training; the cache build
def test_a_run_on_uint8_batches_equals_the_run_on_float32_batches_normalised_in_the_collator(
    case, model_dirs, image_folder, tmp_path
):
    from bench.common import float32_batches
    from tests.helpers import quick_train

    def run(name):
        cache = str(tmp_path / name / "features")  # its own feature cache: pixels through both runs, no reuse
        return quick_train(
            "image", case, model_dirs["vit"], image_folder, tmp_path / name, epochs=1, augment=False,
            feature_cache_dir=cache,
        )  # fmt: skip

    raw = run("uint8")
    with float32_batches():
        before = run("float32")
    assert not raw.metrics["feature_cache"].get("hit") and not before.metrics["feature_cache"].get("hit")
    assert raw.metrics["history"] == before.metrics["history"]
    after, then = raw.model.state_dict(), before.model.state_dict()
    assert all(torch.equal(after[name], then[name]) for name in after)


@pytest.mark.parametrize("streaming", [False, True], ids=["epochs", "stream"])
def test_the_loops_normalise_ahead_of_an_engines_own_input_hook(
    streaming, model_dirs, image_folder, tmp_path, monkeypatch
):
    """An engine may add its own input hook at prepare, in front of every other (FSDP2 casts floating inputs to its
    compute dtype and lets uint8 through): each loop moves the pixel hook back in front after prepare."""
    import accelerate

    import hftl

    seen: list[torch.dtype] = []
    prepare = accelerate.Accelerator.prepare

    def prepare_with_an_engine_hook(self, *args, **kwargs):
        prepared = prepare(self, *args, **kwargs)
        for thing in prepared if isinstance(prepared, tuple) else (prepared,):
            if isinstance(thing, torch.nn.Module):
                thing.register_forward_pre_hook(
                    lambda module, args, kwargs: seen.append(kwargs["pixel_values"].dtype),
                    with_kwargs=True,
                    prepend=True,
                )
        return prepared

    monkeypatch.setattr(accelerate.Accelerator, "prepare", prepare_with_an_engine_hook)
    steps = {"streaming": True, "max_steps": 2} if streaming else {"epochs": 1}
    hftl.train(
        task="image", case="large_similar", strategy="full", model=str(model_dirs["vit"]),
        dataset=str(image_folder), output_dir=str(tmp_path / "run"), batch_size=8, report_to="none", **steps,
    )  # fmt: skip
    assert seen and set(seen) == {torch.float32}  # training and evaluation batches, normalised first


def test_hooking_again_adds_nothing_and_other_statistics_replace_the_old(model_dirs):
    model, _, stats, raw = loaded(model_dirs["vit"])
    accept_raw_pixels(model, stats)
    accept_raw_pixels(model, stats)
    assert hooks(model) == 1
    other = ImageStats(stats.height, stats.width, 1 / 255, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    accept_raw_pixels(model, other)
    with torch.no_grad():
        assert hooks(model) == 1
        assert torch.allclose(
            model(pixel_values=raw).logits, model(pixel_values=raw.float() / 255).logits, atol=1e-6
        )


def test_text_models_are_left_alone(model_dirs):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dirs["bert"])
    assert accept_raw_pixels(model, None) is model and hooks(model) == 0


FSDP2_ORDER = """
import os, torch, torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from hftl.data.image_stats import ImageStats
from hftl.data.raw_pixels import accept_raw_pixels

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"], RANK="0", WORLD_SIZE="1")
dist.init_process_group("gloo")

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, pixel_values):
        self.seen = pixel_values
        return self.conv(pixel_values).float().mean()

stats = ImageStats(8, 8, 1 / 255, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
raw = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
net = accept_raw_pixels(Net(), stats)  # as the recipe hooks it, before prepare
fully_shard(net, mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16))  # prepare: FSDP2's hook goes first
accept_raw_pixels(net, stats)  # as the loops do after prepare
net(pixel_values=raw)
assert net.seen.dtype == torch.bfloat16, net.seen.dtype  # normalised, then cast by FSDP2 as float32 batches were
assert torch.equal(net.seen, stats.normalise(raw).to(torch.bfloat16))
dist.destroy_process_group()
print("ok")
"""


def test_after_an_engine_wraps_the_model_the_pixels_are_normalised_before_its_own_input_cast(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PORT": port, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", FSDP2_ORDER],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
