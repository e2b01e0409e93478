"""One call that teaches transformers' Auto classes (and so ``pipeline``) every model type hftl saves."""

from __future__ import annotations


def register_auto_classes() -> None:
    """Register hftl's word-vector classifier and every family's pooled classifier (``hftl-pooled-*``).

    ``import hftl`` stays light, so a plain ``pipeline(model=FOLDER)`` on such a folder needs this call first;
    hftl's own loaders register what a folder needs by themselves. Calling it again is harmless."""
    from hftl.modeling.pooled import register_pooled_classes
    from hftl.modeling.word_vectors import register_word_vectors

    register_word_vectors()
    register_pooled_classes()
