"""Length-grouped sampling: a seeded permutation per epoch whose batches need less padding than random ones."""

from __future__ import annotations

import random

from datasets import Dataset

from hftl.data.sampling import LengthGroupedSampler, length_grouped_sampler, sequence_lengths


def padded_tokens(order: list[int], lengths: list[int], batch_size: int) -> int:
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def test_grouped_order_is_a_seeded_permutation_per_epoch_with_less_padding():
    rnd = random.Random(0)
    lengths = [rnd.choice([4, 6, 8, 12, 60, 120]) for _ in range(400)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(400)) and len(sampler) == 400
    assert (
        list(LengthGroupedSampler(lengths, batch_size=8, seed=3)) == first
    )  # same seed, same epoch: same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(400))
    shuffled = list(range(400))
    rnd.shuffle(shuffled)
    assert padded_tokens(first, lengths, 8) < 0.6 * padded_tokens(shuffled, lengths, 8)


def test_lengths_come_from_the_tokenized_dataset_in_its_current_order():
    dataset = Dataset.from_dict({"input_ids": [[1] * n for n in (3, 1, 2, 5)], "labels": [0, 1, 0, 1]})
    assert sequence_lengths(dataset) == [3, 1, 2, 5]
    assert sequence_lengths(dataset.select([3, 0])) == [5, 3]
    assert sequence_lengths(Dataset.from_dict({"length": [7, 2]})) == [7, 2]
    assert sequence_lengths(Dataset.from_dict({"pixel_values": [[0.0]]})) is None
    assert length_grouped_sampler(Dataset.from_dict({"pixel_values": [[0.0]]}), 8, 0) is None
    assert isinstance(length_grouped_sampler(dataset, 2, 0), LengthGroupedSampler)
