"""``--model vectors:PATH_OR_NAME``: the run's tokenizer and model come from word vectors and the training split.

The tokenizer is a word vocabulary built from the training texts (lowercased when the vectors are, unless told);
the model is a ``WordVectorsForSequenceClassification`` whose embedding matrix holds the vectors aligned to that
vocabulary. ``hftl.sources.hub`` dispatches here; the rest of the run (plan, loop, artifacts) is the same as for any
other family. The vectors are loaded once per run and released once the matrix is built.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate import PartialState

from hftl.config import RunConfig
from hftl.errors import ConfigError, ModelError
from hftl.modeling.word_vectors import WordVectorsConfig, WordVectorsForSequenceClassification
from hftl.settings import VECTOR_POOLINGS, VECTORS_PREFIX, head_width
from hftl.sources.registry import label_kwargs, register_source
from hftl.sources.vector_files import load_vectors, looks_like_vectors_path
from hftl.sources.word_vectors import build_word_tokenizer, embedding_matrix, vectors_are_lowercase
from hftl.tasks import Task

if TYPE_CHECKING:
    from hftl.data.loading import Splits


def is_vectors_model(name: str | None) -> bool:
    """True for ``vectors:PATH_OR_NAME`` model names."""
    return bool(name) and str(name).startswith(VECTORS_PREFIX)


def vectors_source(name: str) -> str:
    """The file or gensim-data name after the ``vectors:`` prefix."""
    return str(name)[len(VECTORS_PREFIX) :]


def check_vectors_source(name: str) -> str:
    """Fail early for a vectors path that does not exist (gensim-data names are checked when loaded)."""
    source = vectors_source(name)
    if looks_like_vectors_path(source) and not Path(source).expanduser().is_file():
        raise ModelError(f"word vectors file does not exist: {source}")
    return name


def check_text_task(task: Task) -> None:
    if task.modality != "text":
        raise ConfigError(f"--model vectors:... needs a text task; task {task.name!r} is {task.modality}")


_held = 0  # open vectors_held() blocks: the parsed vectors stay loaded from one run to the next


@functools.lru_cache(maxsize=1)
def _vectors(source: str, format: str, limit: int | None, stamp: tuple[int, ...] | None) -> Any:
    return load_vectors(source, format=format, limit=limit)


def _stamp(source: str) -> tuple[int, ...] | None:
    """Size, modification and change time of a vectors file (a changed file is parsed again, even with its
    modification time put back); None for gensim-data names."""
    path = Path(source).expanduser()
    if not path.is_file():
        return None
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def vectors_for(config: RunConfig) -> Any:
    """The run's vectors (cached between the tokenizer and the model steps)."""
    source = vectors_source(config.model)
    return _vectors(source, config.vectors_format, config.vectors_limit, _stamp(source))


@contextlib.contextmanager
def vectors_held() -> Iterator[None]:
    """Keep the parsed vectors loaded between the runs inside (the advisor's trials, and the run they choose):
    parsing a text file was most of each short trial (5.0 of 7.0 s of a GloVe 50k-word trial on SST-2)."""
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1


def lowercase_for(config: RunConfig, kv: Any) -> bool:
    return config.vectors_lowercase if config.vectors_lowercase is not None else vectors_are_lowercase(kv)


def build_tokenizer(task: Task, config: RunConfig, splits: Splits | None = None) -> Any:
    """The word vocabulary of the training split (both sentences of a pair) as a fast tokenizer (saved with the
    model as tokenizer.json); a pair is encoded as the words of both, which the bag of vectors pools together."""
    check_text_task(task)
    if splits is None:
        raise ConfigError("a word-vector tokenizer is built from the training split: pass the splits")
    columns = [splits.input_column] + ([splits.pair_column] if splits.pair_column else [])
    return build_word_tokenizer(
        [text for column in columns for text in splits.train[column]],
        lowercase=lowercase_for(config, vectors_for(config)),
        split=config.vectors_split,
        min_freq=config.vectors_min_freq,
        max_vocab=config.vectors_max_vocab,
    )


def vectors_pooling(config: RunConfig) -> str:
    """``--pooling mean|max`` chooses the pooling of the word vectors too; auto keeps --vectors-pooling."""
    if config.pooling in VECTOR_POOLINGS:
        return config.pooling
    if config.pooling != "auto":
        raise ConfigError(
            f"--pooling {config.pooling}: word vectors have no first token or pooler to read; use mean or max"
        )
    return config.vectors_pooling


def vectors_hidden_size(config: RunConfig) -> int:
    """``--head linear`` is a single layer, ``mlp:N`` one hidden layer of N; auto keeps --vectors-hidden-size."""
    if config.head == "auto":
        return config.vectors_hidden_size
    return head_width(config.head) or 0


def model_config(
    config: RunConfig, labels: list[str], vocab_size: int, kv: Any, **extra: Any
) -> WordVectorsConfig:
    return WordVectorsConfig(
        vocab_size=vocab_size,
        embedding_dim=kv.vector_size,
        pooling=vectors_pooling(config),
        encoder=config.vectors_encoder,
        hidden_size=vectors_hidden_size(config),
        vectors=vectors_source(config.model),
        lowercase=lowercase_for(config, kv),
        **label_kwargs(labels, config.problem_type),
        **extra,
    )


def build_model(
    task: Task, config: RunConfig, labels: list[str], tokenizer: Any
) -> WordVectorsForSequenceClassification:
    """The classifier with the vectors aligned to ``tokenizer``'s vocabulary (or, with ``--init scratch``, random
    vectors of the same size and scale). Prints the OOV report and keeps it in the model config."""
    kv = vectors_for(config)
    matrix, report = embedding_matrix(kv, tokenizer, oov_init=config.vectors_oov_init, seed=config.seed)
    if config.init == "scratch":
        matrix = random_like(matrix, tokenizer.pad_token_id, config.seed)
    settings = model_config(
        config, labels, len(matrix), kv, pad_token_id=tokenizer.pad_token_id, oov_report=report.to_dict()
    )
    model = WordVectorsForSequenceClassification(settings)
    with torch.no_grad():
        model.word_vectors.embeddings.weight.copy_(torch.from_numpy(matrix))
    PartialState().print(report.render())
    if not _held:  # the matrix holds what the run needs: let the (possibly large) vectors go
        _vectors.cache_clear()
    return model


def random_like(matrix: np.ndarray, pad_id: int | None, seed: int) -> np.ndarray:
    """Random vectors with the same shape and overall scale as ``matrix`` (the from-scratch baseline)."""
    rows = np.ones(len(matrix), dtype=bool)
    if pad_id is not None:
        rows[pad_id] = False
    scale = float(matrix[rows].std()) or 1.0
    random = np.random.default_rng(seed).normal(0.0, scale, size=matrix.shape).astype(np.float32)
    random[~rows] = 0.0
    return random


def build_meta_model(
    task: Task, config: RunConfig, labels: list[str] | None = None
) -> WordVectorsForSequenceClassification:
    """The architecture on the meta device for ``hftl plan``; without data, the vocabulary is every vector (+2)."""
    kv = vectors_for(config)
    settings = model_config(config, labels or ["0", "1"], len(kv) + 2, kv)
    with torch.device("meta"):
        return WordVectorsForSequenceClassification(settings)


class VectorsSource:
    """``vectors:PATH_OR_NAME``: word vectors (GloVe, word2vec, gensim) under a bag-of-vectors classifier."""

    name = "vectors"

    def matches(self, model: str) -> bool:
        return is_vectors_model(model)

    def check(self, model: str) -> str:
        return check_vectors_source(model)

    build_model = staticmethod(build_model)
    build_meta_model = staticmethod(build_meta_model)
    load_processor = staticmethod(build_tokenizer)


SOURCE = register_source(VectorsSource())
