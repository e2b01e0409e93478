"""The data half of a run: what a stream changes for --class-weights auto and the notes a stream prints."""

from __future__ import annotations

import pytest

import hftl
from hftl.config import RunConfig
from hftl.data.loading import Splits, StreamInfo
from hftl.recipes.prepare import counted_from, not_for_streams, train_label_ids


def stream_splits_with(scanned: list[int]) -> Splits:
    info = StreamInfo("fingerprint", "the first 6 train examples", scanned_labels=scanned)
    return Splits(None, None, ["a", "b", "c"], "text", "label", "data", stream=info)  # type: ignore[arg-type]


def test_class_weights_auto_counts_the_scanned_labels_and_needs_every_class_among_them():
    config = RunConfig(task="text", case="large_similar", streaming=True, max_steps=3, class_weights="auto")
    assert train_label_ids(config, stream_splits_with([0, 1, 2, 0])) == [0, 1, 2, 0]
    with pytest.raises(
        hftl.DataError, match=r"class\(es\) \['c'\] have no example among the first 4 .* --label-scan"
    ):
        train_label_ids(config, stream_splits_with([0, 1, 1, 0]))


def test_a_stream_says_which_default_settings_it_leaves_aside_and_where_class_counts_come_from():
    streamed = RunConfig(task="text", case="large_similar", streaming=True, max_steps=3)
    note = "--group-by-length: not applied to a stream (batches come in stream order)"
    assert not_for_streams(streamed, "text") == [note] and not_for_streams(streamed, "image") == []
    assert not_for_streams(RunConfig(task="text", case="large_similar"), "text") == []
    assert (
        counted_from(stream_splits_with([0, 1, 2]))
        == " (counted on the first 3 train examples of the stream)"
    )
