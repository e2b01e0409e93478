"""--quantize 4bit (QLoRA): checked before any data loads, refused in one line where bitsandbytes cannot run (no
CUDA here: the refusal is what is tested), and nothing imports bitsandbytes unless a quantized run starts."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

import hftl
from hftl.errors import ConfigError
from hftl.sources import quantization
from hftl.sources.quantization import check_quantization, quantized_loading


def settings(**overrides):
    values = {"quantize": "4bit", "model": "some/bert", "init": "pretrained", **overrides}
    return SimpleNamespace(**values)


def test_quantize_needs_lora_and_is_never_merged():
    config = hftl.RunConfig(task="text", case="large_similar", strategy="lora", quantize="4bit")
    assert config.quantize == "4bit"
    with pytest.raises(ConfigError, match="add --strategy lora"):
        hftl.RunConfig(task="text", case="large_similar", strategy="full", quantize="4bit")
    with pytest.raises(ConfigError, match="merge the adapters into 4-bit weights"):
        hftl.RunConfig(task="text", case="large_similar", strategy="lora", quantize="4bit", merge_lora=True)
    with pytest.raises(ConfigError, match="unknown quantize '8bit'"):
        hftl.RunConfig(task="text", case="large_similar", strategy="lora", quantize="8bit")


def test_without_cuda_or_bitsandbytes_the_run_is_refused_in_one_line(monkeypatch):
    with pytest.raises(ConfigError, match="needs a CUDA GPU: bitsandbytes' 4-bit kernels run on CUDA only"):
        check_quantization(settings(), cuda=False)
    monkeypatch.setattr(quantization.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ConfigError, match=r"needs bitsandbytes, which is not installed: pip install 'hftl\[qlora\]'"
    ):
        check_quantization(settings(), cuda=True)
    for other in (
        settings(model="timm:resnet18"),
        settings(model="vectors:glove.txt"),
        settings(init="scratch"),
    ):
        with pytest.raises(ConfigError, match="does not apply to"):
            check_quantization(other, cuda=True)
    check_quantization(settings(quantize=None), cuda=False)  # nothing asked, nothing checked


def test_the_nf4_base_is_described_without_importing_bitsandbytes():
    loading = quantized_loading(settings())
    nf4 = loading["quantization_config"]
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_use_double_quant
    assert nf4.bnb_4bit_compute_dtype == torch.bfloat16 and loading["device_map"] == {"": 0}
    assert quantized_loading(settings(quantize=None)) == {}
    assert "bitsandbytes" not in sys.modules


def test_the_new_head_is_left_unquantized():
    """reset_head initialises the head's Linear layers: as 4-bit weights (uint8) they could not be (seen on a GPU)."""
    from transformers import BertConfig, DistilBertConfig

    for model_config, head in (
        (BertConfig(), ["classifier"]),
        (DistilBertConfig(), ["pre_classifier", "classifier"]),
    ):
        nf4 = quantized_loading(settings(), model_config)["quantization_config"]
        assert nf4.llm_int8_skip_modules == head


def test_the_cli_refuses_qlora_on_this_machine_before_writing_anything(monkeypatch, capsys, tmp_path):
    from hftl.train import main

    monkeypatch.setattr(quantization.torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    flags = ["--task", "text", "--case", "large_similar", "--strategy", "lora", "--quantize", "4bit"]
    assert main([*flags, "--output-dir", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("hftl: error: --quantize 4bit needs a CUDA GPU")
    assert not out.exists()
