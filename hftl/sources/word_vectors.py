"""Pretrained word vectors (read by ``hftl.sources.vector_files``): a vocabulary built from the training split (saved
as a standard Hugging Face fast tokenizer), and the embedding matrix aligned to it with an OOV report.

The alignment is one fancy-indexing copy from the vectors into the matrix, so a memory-mapped file only reads the
rows the vocabulary needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hftl.errors import DataError, unknown_choice
from hftl.settings import OOV_INITS, WORD_SPLITS
from hftl.sources.vector_files import require_gensim

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"


def vectors_are_lowercase(kv: Any, sample: int = 10_000) -> bool:
    """True when (almost) no word among the first ``sample`` is capitalised: GloVe yes, GoogleNews word2vec no.
    Used to pick lowercasing automatically so the vocabulary matches the vectors."""
    words = kv.index_to_key[:sample]
    cased = sum(1 for word in words if word != word.lower())
    return cased <= 0.01 * max(len(words), 1)


# --- vocabulary ----------------------------------------------------------------------------------------------------
def word_tokenizer_backend(
    lowercase: bool = True, split: str = "words", vocab: Mapping[str, int] | None = None
) -> Any:
    """A ``tokenizers.Tokenizer``: NFKC (+ lowercase) normaliser, a word pre-tokenizer and a WordLevel model.

    ``split="words"`` separates words from punctuation (``tokenizers``' ``Whitespace``: ``\\w+|[^\\w\\s]+``);
    ``"whitespace"`` splits on whitespace only.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    if split not in WORD_SPLITS:
        raise unknown_choice("word split", split, WORD_SPLITS)
    vocab = dict(vocab) if vocab is not None else {PAD_TOKEN: 0, UNK_TOKEN: 1}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = (
        pre_tokenizers.Whitespace() if split == "words" else pre_tokenizers.WhitespaceSplit()
    )
    return backend


def words_of(text: str, backend: Any) -> list[str]:
    """The words of ``text`` exactly as the tokenizer ``backend`` sees them (normalised, pre-tokenized)."""
    normalized = backend.normalizer.normalize_str(text)
    return [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]


def count_words(texts: Iterable[str], lowercase: bool = True, split: str = "words") -> Counter[str]:
    """Word frequencies of ``texts`` under the given normalisation and split."""
    backend = word_tokenizer_backend(lowercase, split)
    counts: Counter[str] = Counter()
    for row, text in enumerate(texts):
        if text is None:  # missing texts are skipped (and reported) when the splits are tokenized
            continue
        if not isinstance(text, str):
            raise DataError(f"row {row}: the text is {type(text).__name__}, not a string")
        counts.update(words_of(text, backend))
    return counts


def build_word_tokenizer(
    texts: Iterable[str],
    *,
    lowercase: bool = True,
    split: str = "words",
    min_freq: int = 1,
    max_vocab: int | None = None,
) -> Any:
    """A Hugging Face fast tokenizer whose vocabulary is the words of ``texts`` (the training split).

    Ids: ``[PAD]`` 0, ``[UNK]`` 1, then words by decreasing frequency (ties alphabetical) with at least
    ``min_freq`` occurrences, at most ``max_vocab`` of them. Lowercasing and the split are part of the saved
    ``tokenizer.json``, so ``AutoTokenizer.from_pretrained`` and ``pipeline`` tokenize exactly as training did.
    The word counts of the vocabulary are kept on the returned object as ``word_counts`` (for the OOV report).
    """
    from transformers import PreTrainedTokenizerFast

    counts = count_words(texts, lowercase, split)
    words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    if max_vocab is not None:
        words = words[:max_vocab]
    if not words:
        raise DataError("the training texts have no words to build a vocabulary from")
    vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1} | {word: i + 2 for i, word in enumerate(words)}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_tokenizer_backend(lowercase, split, vocab),
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_input_names=["input_ids", "attention_mask"],
    )
    tokenizer.word_counts = {word: counts[word] for word in words}
    return tokenizer


# --- alignment -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OOVReport:
    """How well the vectors cover the vocabulary: by word type and, given counts, by running word (token).

    Counts are over the vocabulary's words (special tokens excluded); ``top_missing`` lists the most frequent
    words without a vector, which usually reveals a casing or tokenization mismatch with the vectors.
    """

    vocab_size: int
    found: int
    tokens: int | None
    tokens_found: int | None
    top_missing: tuple[tuple[str, int], ...]
    init: str

    @property
    def missing(self) -> int:
        return self.vocab_size - self.found

    @property
    def type_coverage(self) -> float:
        return self.found / max(self.vocab_size, 1)

    @property
    def token_coverage(self) -> float | None:
        if self.tokens is None or self.tokens_found is None:
            return None
        return self.tokens_found / max(self.tokens, 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["top_missing"] = [list(item) for item in self.top_missing]
        data.update(type_coverage=round(self.type_coverage, 6))
        if self.token_coverage is not None:
            data.update(token_coverage=round(self.token_coverage, 6))
        return data

    def render(self) -> str:
        lines = [
            f"Word vectors cover {self.found:,} of {self.vocab_size:,} vocabulary words "
            f"({100 * self.type_coverage:.2f}% of types"
            + (
                f", {100 * self.token_coverage:.2f}% of training tokens)"
                if self.token_coverage is not None
                else ")"
            )
            + f"; {self.missing:,} missing words initialised with {self.init!r}"
        ]
        if self.top_missing:
            shown = ", ".join(f"{word} ({count})" for word, count in self.top_missing[:10])
            lines.append(f"  most frequent missing words: {shown}")
        return "\n".join(lines)


def vocabulary_of(vocab: Any) -> list[str]:
    """Words in id order from a tokenizer (``get_vocab()``), a ``{word: id}`` mapping or a word sequence."""
    if hasattr(vocab, "get_vocab"):
        vocab = vocab.get_vocab()
    if isinstance(vocab, Mapping):
        ordered = sorted(vocab.items(), key=lambda item: item[1])
        if [i for _, i in ordered] != list(range(len(ordered))):
            raise DataError("vocabulary ids must be 0..N-1 without gaps")
        return [word for word, _ in ordered]
    return list(vocab)


def embedding_matrix(
    kv: Any,
    vocab: Any,
    *,
    counts: Mapping[str, int] | None = None,
    oov_init: str = "random",
    special_tokens: Sequence[str] = (PAD_TOKEN, UNK_TOKEN),
    pad_token: str | None = PAD_TOKEN,
    seed: int = 0,
    top_n: int = 20,
) -> tuple[np.ndarray, OOVReport]:
    """The ``len(vocab) x dim`` float32 matrix of ``kv``'s vectors in vocabulary order, and its OOV report.

    Rows of words the vectors lack (and of special tokens other than padding) follow ``oov_init``: ``zeros``;
    ``random``: normal draws with the per-dimension mean and std of the matched vectors (seeded); ``mean``: the
    mean matched vector. The padding row is zero. ``counts`` (word -> training frequency; a tokenizer from
    ``build_word_tokenizer`` carries them) adds token coverage to the report.
    """
    if oov_init not in OOV_INITS:
        raise unknown_choice("oov_init", oov_init, OOV_INITS)
    if counts is None:
        counts = getattr(vocab, "word_counts", None)
    if hasattr(vocab, "all_special_tokens"):
        special_tokens = vocab.all_special_tokens
        pad_token = getattr(vocab, "pad_token", pad_token)
    words = vocabulary_of(vocab)
    lookup = kv.key_to_index
    index = np.fromiter((lookup.get(word, -1) for word in words), dtype=np.int64, count=len(words))
    specials = set(special_tokens)
    special = np.fromiter((word in specials for word in words), dtype=bool, count=len(words))
    index[special] = -1
    hit = index >= 0

    matrix = np.zeros((len(words), kv.vector_size), dtype=np.float32)
    matrix[hit] = kv.vectors[index[hit]]  # the one vectorised copy (reads only these rows of a memory map)
    reference = matrix[hit] if hit.any() else np.asarray(kv.vectors[: min(len(kv), 10_000)], dtype=np.float32)
    fill = ~hit
    if pad_token is not None and pad_token in words:
        fill[words.index(pad_token)] = False
    if oov_init == "mean":
        matrix[fill] = reference.mean(axis=0)
    elif oov_init == "random":
        rng = np.random.default_rng(seed)
        mean, std = reference.mean(axis=0), reference.std(axis=0)
        matrix[fill] = rng.normal(mean, std, size=(int(fill.sum()), kv.vector_size)).astype(np.float32)

    real = ~special
    freq = np.fromiter(((counts or {}).get(word, 0) for word in words), dtype=np.int64, count=len(words))
    missing = sorted(np.flatnonzero(real & ~hit), key=lambda i: (-freq[i], words[i]))
    tokens = int(freq[real].sum()) if counts is not None else None
    tokens_found = int(freq[hit].sum()) if counts is not None else None
    report = OOVReport(
        vocab_size=int(real.sum()),
        found=int(hit.sum()),
        tokens=tokens,
        tokens_found=tokens_found,
        top_missing=tuple((words[i], int(freq[i])) for i in missing[:top_n]),
        init=oov_init,
    )
    return matrix, report


def embedding_layer(
    kv: Any,
    vocab: Any,
    *,
    freeze: bool = True,
    oov_init: str = "random",
    counts: Mapping[str, int] | None = None,
    seed: int = 0,
) -> tuple[Any, OOVReport]:
    """A ``torch.nn.Embedding`` holding ``kv``'s vectors for ``vocab`` (padding row zero and ignored by its
    gradient), frozen or trainable, with the OOV report. ``vocab``: a tokenizer, ``{word: id}`` or word list."""
    import torch
    from torch import nn

    matrix, report = embedding_matrix(kv, vocab, counts=counts, oov_init=oov_init, seed=seed)
    words = vocabulary_of(vocab)
    pad = getattr(vocab, "pad_token", PAD_TOKEN)
    padding_idx = words.index(pad) if pad in words else None
    layer = nn.Embedding.from_pretrained(torch.from_numpy(matrix), freeze=freeze, padding_idx=padding_idx)
    return layer, report


def keyed_vectors(words: Sequence[str], matrix: Any) -> Any:
    """gensim ``KeyedVectors`` over ``words`` with the rows of ``matrix`` (e.g. a trained model's embeddings), so
    ``most_similar`` and the rest of gensim work on them."""
    require_gensim()
    from gensim.models import KeyedVectors

    matrix = np.asarray(matrix, dtype=np.float32)
    kv = KeyedVectors(vector_size=matrix.shape[1])
    kv.add_vectors(list(words), matrix)
    return kv
