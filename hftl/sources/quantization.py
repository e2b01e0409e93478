"""QLoRA's 4-bit base (``--quantize 4bit``): the pretrained weights loaded as NF4 through bitsandbytes, computed in
bf16, frozen, with LoRA adapters (and the new head) trained in full precision on top (Dettmers et al., 2023).

bitsandbytes is an optional extra (``pip install 'hftl[qlora]'``) and its 4-bit kernels run on CUDA only: a run
asks for it before any data is loaded, and nothing here imports bitsandbytes, so hftl works without it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch
from torch import nn

from hftl.errors import ConfigError


def check_quantization(config: Any, cuda: bool | None = None) -> None:
    """Refuse ``--quantize`` where it cannot run, in one line that says what to do instead."""
    if not config.quantize:
        return
    model = str(config.model or "")
    if model.startswith(("timm:", "vectors:")) or config.init == "scratch":
        raise ConfigError(
            f"--quantize {config.quantize} loads pretrained transformers weights in 4 bits; it does not apply to "
            f"{'--init scratch' if config.init == 'scratch' else model.split(':')[0] + ' models'}: leave it out"
        )
    if not (torch.cuda.is_available() if cuda is None else cuda):
        raise ConfigError(
            f"--quantize {config.quantize} needs a CUDA GPU: bitsandbytes' 4-bit kernels run on CUDA only, and this "
            "machine has none. Train LoRA without --quantize here (--strategy lora), or run it on a GPU machine"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"--quantize {config.quantize} needs bitsandbytes, which is not installed: pip install 'hftl[qlora]'"
        )


def quantized_loading(config: Any, model_config: Any = None) -> dict[str, Any]:
    """``from_pretrained`` keywords for the 4-bit base: NF4 with double quantization, bf16 compute, on this
    process's GPU (``LOCAL_RANK`` under DDP); none without ``--quantize``. The family's head modules stay unquantized:
    they are replaced by a new head that trains in full precision (transformers' own list of modules to skip
    only covers language-model heads, so a classifier would load as 4-bit weights nothing can initialise)."""
    if not config.quantize:
        return {}
    from transformers import BitsAndBytesConfig

    from hftl.backbones import backbone_for

    head = list(backbone_for(model_config).head_names) if model_config is not None else []
    nf4 = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=head or None,  # the skip list of both 8- and 4-bit loading
    )
    return {"quantization_config": nf4, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def prepare_quantized(model: nn.Module, config: Any) -> nn.Module:
    """PEFT's ``prepare_model_for_kbit_training``: every base weight frozen, norms and the new head in fp32 for a
    stable training; gradient checkpointing is hftl's own switch (``--gradient-checkpointing``), applied later."""
    if not config.quantize:
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
