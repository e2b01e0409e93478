"""The model card's usage snippets: code that runs as written, for the pipeline and for PEFT."""

from __future__ import annotations

import json

from hftl.tasks import Task

EXAMPLE_TEXT = "This is an example sentence."
EXAMPLE_IMAGE = "example.jpg"


def pipeline_snippet(task: Task, location: str, max_length: int, every: str = "") -> str:
    """``every`` (multi-label): the ``top_k`` that lists every label with its sigmoid score."""
    note = "  # every label, with its sigmoid score\n" if every else "\n"
    if task.modality == "text":
        return (
            "from transformers import pipeline\n\n"
            f"classify = pipeline({py_literal(task.pipeline_tag)}, model={py_literal(location)})\n"
            f"print(classify({py_literal(EXAMPLE_TEXT)}, truncation=True, max_length={max_length}"
            + (f", {every}" if every else "")
            + "))"
            + note
        )
    return (
        "from transformers import pipeline\n\n"
        f"classify = pipeline({py_literal(task.pipeline_tag)}, model={py_literal(location)})\n"
        f"print(classify({py_literal(EXAMPLE_IMAGE)}{', ' + every if every else ''}))  # a path, URL or PIL image"
        + ("; every label, with its sigmoid score\n" if every else "\n")
    )


def peft_snippet(task: Task, location: str, max_length: int, threshold: float | None) -> str:
    """PEFT's Auto class for the adapter: text adapters carry PEFT's SEQ_CLS task type, image adapters none (the
    generic ``AutoPeftModel`` builds their base with the class their adapter_config names); ``threshold``: the
    multi-label decision threshold (None: single-label)."""
    truncate = f"truncation=True, max_length={max_length}"
    if task.modality == "text":
        auto_peft, processor_class, imports = "AutoPeftModelForSequenceClassification", "AutoTokenizer", ""
        prepare = f'inputs = processor({py_literal(EXAMPLE_TEXT)}, {truncate}, return_tensors="pt")\n'
    else:
        auto_peft, processor_class, imports = "AutoPeftModel", "AutoImageProcessor", "from PIL import Image\n"
        prepare = f'inputs = processor(images=Image.open({py_literal(EXAMPLE_IMAGE)}).convert("RGB"), return_tensors="pt")\n'
    return (
        "import torch\n"
        f"from peft import {auto_peft}\n"
        f"{imports}"
        f"from transformers import {processor_class}\n\n"
        f"model = {auto_peft}.from_pretrained({py_literal(location)}).eval()\n"
        f"processor = {processor_class}.from_pretrained({py_literal(location)})\n\n"
        + prepare
        + "with torch.no_grad():\n"
        "    logits = model(**inputs).logits\n"
        + (
            "scores = torch.sigmoid(logits)[0]  # multi-label: every label's own score\n"
            "print([model.config.id2label[i] for i, p in enumerate(scores) "
            f"if p > {threshold}])\n"
            if threshold is not None
            else "print(model.config.id2label[int(logits.argmax(-1))])\n"
        )
    )


def py_literal(value: str) -> str:
    """A Python string literal with double quotes, as the snippets are written."""
    return json.dumps(value)
