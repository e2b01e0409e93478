"""Embedding reuse: features from any pretrained or trained backbone, and nearest neighbours over them.

``embed`` turns texts, images or words into fixed-size vectors with a Hub model or plain folder (the encoder), an
hftl output folder (the trained encoder without its head; LoRA adapters active), a ``RunResult``, a model object, or
word vectors (gensim ``KeyedVectors``, ``vectors:PATH_OR_NAME`` or a vectors file). It runs batched, without
gradients, on the Accelerate device. ``similar`` ranks words (gensim neighbours) or candidate inputs (cosine).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from torch import nn

from hftl.errors import ConfigError, DataError, ModelError, unknown_choice
from hftl.inference.predict import (
    Resolved,
    as_batch,
    as_image,
    check_texts,
    load_processor_of,
    modality_of,
    resolve,
    unwrap_peft,
)
from hftl.modeling.pooled import pool, register_for_source
from hftl.settings import POOLINGS as RUN_POOLINGS
from hftl.settings import VECTORS_PREFIX
from hftl.settings.data import DEFAULT_MAX_IMAGE_PIXELS

POOLINGS = tuple(p for p in RUN_POOLINGS if p != "auto")


# --- sources -------------------------------------------------------------------------------------------------------
def is_word_vectors(source: Any) -> bool:
    """gensim KeyedVectors, ``vectors:...`` or a path to a single vectors file (a model is a folder)."""
    if hasattr(source, "key_to_index") and hasattr(source, "vectors"):
        return True
    if isinstance(source, str | Path):
        text = str(source)
        return text.startswith(VECTORS_PREFIX) or Path(text).expanduser().is_file()
    return False


def word_vectors_of(source: Any) -> Any:
    """``KeyedVectors`` for a vectors source, or for a trained word-vector model (its embedding rows by word)."""
    from hftl.sources.vector_files import load_vectors
    from hftl.sources.word_vectors import keyed_vectors

    if hasattr(source, "key_to_index"):
        return source
    if isinstance(source, str | Path) and is_word_vectors(source):
        return load_vectors(str(source).removeprefix(VECTORS_PREFIX))
    resolved = resolve(source)
    embeddings = (
        resolved.model.get_input_embeddings() if hasattr(resolved.model, "get_input_embeddings") else None
    )
    if getattr(resolved.model.config, "model_type", "") != "hftl-word-vectors" or embeddings is None:
        raise ConfigError(
            "word neighbours need word vectors: gensim KeyedVectors, vectors:PATH_OR_NAME or a word-vector model; "
            "for other models pass candidates=[...] to rank inputs by cosine similarity"
        )
    vocab = resolved.processor.get_vocab()
    special = set(resolved.processor.all_special_tokens)
    ids = [i for word, i in sorted(vocab.items(), key=lambda item: item[1]) if word not in special]
    words = [word for word, _ in sorted(vocab.items(), key=lambda item: item[1]) if word not in special]
    matrix = embeddings.weight.detach().float().cpu().numpy()[ids]
    return keyed_vectors(words, matrix)


def encoder_of(model: nn.Module) -> nn.Module:
    """The feature extractor of a task model (``base_model``: no head); other models as they are."""
    model = unwrap_peft(model)
    prefix = getattr(model, "base_model_prefix", "")
    return getattr(model, prefix) if prefix and hasattr(model, prefix) else model


def resolve_encoder(source: Any, processor: Any = None) -> Resolved:
    """hftl folders, RunResults and task models through ``resolve``; other names load with ``AutoModel``."""
    from transformers import AutoConfig, AutoModel

    from hftl.outputs.loading import task_of
    from hftl.sources.registry import local_or_hub
    from hftl.sources.safety import pickled_weights_refused

    if isinstance(source, str | Path):
        name = local_or_hub(str(source))  # a local folder's files are its own: no link leads out of it
        folder = Path(name).expanduser()
        is_adapter = (folder / "adapter_config.json").is_file()
        if not is_adapter:
            register_for_source(name)
            try:
                config = AutoConfig.from_pretrained(name)
            except (OSError, ValueError) as error:
                raise ModelError(
                    f"cannot load {name!r} to embed with ({type(error).__name__}: {error})"
                ) from error
            try:
                task_of(name, config)
            except ModelError:  # a plain encoder (BertModel, ViTModel, ...): no head to take off
                with pickled_weights_refused(name):
                    model = AutoModel.from_pretrained(name)
                modality = modality_of(model)
                return Resolved(model, processor or load_processor_of(name, modality), modality, name)
    return resolve(source, processor)


# --- features ------------------------------------------------------------------------------------------------------
def embed(
    source: Any,
    inputs: Any,
    *,
    pooling: str | None = None,
    batch_size: int = 32,
    max_length: int = 512,
    normalize: bool = False,
    return_tensors: str = "np",
    processor: Any = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> np.ndarray | torch.Tensor:
    """Feature vectors, one row per input: ``[len(inputs), dim]`` (a single input gives ``[dim]``).

    ``pooling``: ``pooler`` (the model's pooled output: ResNet's global pool, BERT's pooler, a word-vector model's
    configured mean/max; ViT without a pooler falls back to its [CLS] token), ``cls``, ``mean`` or ``max`` (over
    real tokens / patches). Default: ``pooler`` for images and word-vector models, ``mean`` for transformer text.
    For word vectors, each input's words are looked up (OOV words skipped) and pooled by ``mean`` or ``max``.
    ``normalize`` L2-normalises the rows; ``return_tensors`` is ``np`` or ``pt`` (a CPU tensor). Image files are
    decoded with at most ``max_image_pixels`` pixels (as in training).
    """
    if pooling is not None and pooling not in POOLINGS:
        raise unknown_choice("pooling", pooling, POOLINGS)
    if return_tensors not in ("np", "pt"):
        raise unknown_choice("return_tensors", return_tensors, ("np", "pt"))
    items, single = as_batch(inputs, batch_size)
    if not items:
        raise DataError("no inputs to embed: give at least one text, image or word")
    if is_word_vectors(source):
        features = embed_words(word_vectors_of(source), items, pooling or "mean")
    else:
        resolved = resolve_encoder(source, processor)
        features = embed_inputs(resolved, items, pooling, batch_size, max_length, max_image_pixels)
    if normalize:
        features = features / features.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    features = features[0] if single else features
    return features.numpy() if return_tensors == "np" else features


def embed_words(kv: Any, texts: list[str], pooling: str) -> torch.Tensor:
    """Each text's in-vocabulary words, pooled; lowercased when the vectors are; zeros when no word is known."""
    from hftl.sources.word_vectors import vectors_are_lowercase, word_tokenizer_backend, words_of

    if pooling not in ("mean", "max"):
        raise ConfigError(f"word vectors pool by 'mean' or 'max', not {pooling!r}")
    backend = word_tokenizer_backend(lowercase=vectors_are_lowercase(kv))
    rows = np.zeros((len(texts), kv.vector_size), dtype=np.float32)
    for row, text in enumerate(texts):
        ids = [kv.key_to_index[word] for word in words_of(text, backend) if word in kv.key_to_index]
        if ids:
            vectors = np.asarray(kv.vectors[ids], dtype=np.float32)
            rows[row] = vectors.mean(axis=0) if pooling == "mean" else vectors.max(axis=0)
    return torch.from_numpy(rows)


def embed_inputs(
    resolved: Resolved,
    items: list[Any],
    pooling: str | None,
    batch_size: int,
    max_length: int,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> torch.Tensor:
    encoder = encoder_of(resolved.model)
    device = PartialState().device
    encoder.to(device).eval()
    word_vectors = getattr(encoder.config, "model_type", "") == "hftl-word-vectors"
    pooling = pooling or ("pooler" if resolved.modality == "image" or word_vectors else "mean")
    chunks = []
    for start in range(0, len(items), batch_size):
        batch = encode(resolved, items[start : start + batch_size], max_length, max_image_pixels)
        batch = {key: value.to(device) for key, value in batch.items()}
        with torch.inference_mode():
            outputs = encoder(**batch)
        chunks.append(pool(outputs, batch.get("attention_mask"), pooling).float().cpu())
    return torch.cat(chunks)


def encode(
    resolved: Resolved, items: list[Any], max_length: int, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> dict[str, torch.Tensor]:
    if resolved.modality == "image":
        images = [as_image(item, max_image_pixels) for item in items]
        return dict(resolved.processor(images, return_tensors="pt"))
    check_texts(items)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise DataError(f"input {i} is {type(item).__name__}; a text model embeds strings")
    encoded = resolved.processor(
        items, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    names = getattr(resolved.processor, "model_input_names", None) or list(encoded)
    return {key: value for key, value in encoded.items() if key in names}


# --- neighbours ----------------------------------------------------------------------------------------------------
def similar(
    source: Any,
    queries: Any,
    candidates: Sequence[Any] | None = None,
    *,
    top_k: int = 10,
    **embed_options: Any,
) -> list[Any]:
    """Nearest neighbours by cosine similarity.

    Without ``candidates``: the words closest to each query word in word vectors (gensim ``most_similar``; a
    trained word-vector model uses its own, possibly fine-tuned, embedding matrix) as ``(word, score)`` pairs.
    With ``candidates``: the candidates (texts or images) closest to each query under ``embed(source, ...)``, as
    ``(candidate index, score)`` pairs. A single query gives one list, a list of queries one list each.
    """
    items, single = as_batch(queries)
    if candidates is None:
        kv = word_vectors_of(source)
        results = []
        for word in items:
            if word not in kv.key_to_index:
                raise DataError(f"word {word!r} is not in the vectors' vocabulary ({len(kv):,} words)")
            results.append([(w, float(s)) for w, s in kv.most_similar(word, topn=top_k)])
    else:
        query_features = embed(source, items, normalize=True, return_tensors="pt", **embed_options)
        candidate_features = embed(
            source, list(candidates), normalize=True, return_tensors="pt", **embed_options
        )
        scores = query_features @ candidate_features.T
        best = scores.topk(min(top_k, len(candidates)), dim=1)
        results = [
            [(int(i), float(s)) for i, s in zip(idx.tolist(), val.tolist(), strict=True)]
            for idx, val in zip(best.indices, best.values, strict=True)
        ]
    return results[0] if single else results
