"""The tiny BERT the tests and the streaming-memory benchmark train: a word-level vocabulary of sentiment words and
filler, 32-wide layers, random weights seeded the same whatever ran before (no file side effects on import)."""

from __future__ import annotations

from pathlib import Path

POSITIVE = ["good", "great", "excellent", "wonderful", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "terrible", "dull", "boring", "poor"]
FILLER = ["the", "film", "movie", "was", "a", "plot", "story", "acting", "really", "quite", "and", "it"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def quiet_and_seeded() -> None:
    """Built models get the same random weights whatever ran before them, without the libraries' chatter."""
    import torch

    from hftl.recipes.run import quiet_library_logs

    quiet_library_logs()
    torch.manual_seed(0)


def make_bert(path: Path, num_layers: int = 4) -> Path:
    """A BERT classifier (2 labels) and its word-level tokenizer saved to ``path``."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    quiet_and_seeded()
    path.mkdir(parents=True, exist_ok=True)
    words = SPECIAL + sorted(set(POSITIVE + NEGATIVE + FILLER))
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(words)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
