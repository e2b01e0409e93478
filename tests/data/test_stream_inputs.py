"""A train stream made ready for the model: each process reads its own share, passes are re-shuffled, a saved
position reads on exactly where the stream stopped, and unusable examples are counted and bounded."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

import hftl
from hftl.config import RunConfig
from hftl.data.stream_inputs import StreamPosition, prepare_stream_inputs
from hftl.data.stream_splits import stream_splits
from hftl.tasks import get_task
from tests.conftest import FILLER, SPECIAL

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={word: i for i, word in enumerate(SPECIAL + FILLER)}, do_lower_case=True)


def write_stream(folder: Path, texts: list[str]) -> Path:
    """Train rows (labels alternate) and a small validation file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", texts), ("validation", texts[-4:])):
        lines = [json.dumps({"text": text, "label": "ab"[i % 2]}) for i, text in enumerate(rows)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def unique_texts(count: int) -> list[str]:
    """Texts that tokenize to different ids, so a batch tells which examples it holds."""
    return [" ".join(words) for words in itertools.islice(itertools.combinations(FILLER, 4), count)]


def stream_of(folder: Path, rank: int = 0, world: int = 1, **values):
    settings = {"max_steps": 5, "batch_size": 4, "shuffle_buffer": 8, "seed": 3, **values}
    config = RunConfig(task="text", case="large_similar", streaming=True, dataset=str(folder), **settings)
    splits = stream_splits(config, get_task("text"))
    return prepare_stream_inputs(splits, "text", tokenizer(), config, rank=rank, world_size=world).stream


def examples(batches) -> list[tuple[int, ...]]:
    return [
        tuple(ids[mask.bool()].tolist())
        for b in batches
        for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True)
    ]


def test_two_processes_read_disjoint_shares_that_cover_the_stream(tmp_path):
    folder = write_stream(tmp_path / "data", unique_texts(40))
    shares = [examples(stream_of(folder, rank, 2).loader()) for rank in (0, 1)]
    everything = examples(stream_of(folder).loader())
    assert len(everything) == 40 and len(set(everything)) == 40
    assert set(shares[0]).isdisjoint(shares[1]) and set(shares[0]) | set(shares[1]) == set(everything)
    assert len(shares[0]) == len(shares[1]) == 20


def test_each_pass_is_reshuffled_and_every_order_is_seeded(tmp_path):
    folder = write_stream(tmp_path / "data", unique_texts(40))
    stream = stream_of(folder)
    batches = stream.batches()
    passes = [examples(itertools.islice(batches, 10)) for _ in range(2)]
    # the second pass's end is noticed only when a batch is asked for after it
    assert (stream.position.passes, stream.position.consumed) == (1, 40)
    assert sorted(passes[0]) == sorted(passes[1]) and passes[0] != passes[1]
    again = stream_of(folder).batches()
    assert examples(itertools.islice(again, 10)) == passes[0]
    assert examples(itertools.islice(stream_of(folder, seed=4).batches(), 10)) != passes[0]


@pytest.mark.parametrize("stop_after", [3, 10, 13], ids=["mid-pass", "pass-end", "second-pass"])
def test_a_saved_position_reads_on_exactly_where_the_stream_stopped(stop_after, tmp_path):
    folder = write_stream(tmp_path / "data", unique_texts(40))  # 10 batches of 4 per pass
    straight = examples(itertools.islice(stream_of(folder).batches(), 16))
    interrupted = stream_of(folder)
    seen = examples(itertools.islice(interrupted.batches(), stop_after))
    saved = json.loads(json.dumps(interrupted.position.to_dict()))  # as a checkpoint stores it
    resumed = stream_of(folder)
    resumed.position = StreamPosition(**saved)
    assert seen + examples(itertools.islice(resumed.batches(), 16 - stop_after)) == straight


def test_unusable_examples_are_skipped_counted_and_too_many_stop_the_run(tmp_path):
    texts = unique_texts(240)
    for i in range(0, 240, 20):
        texts[i] = "   "  # 12 empty texts: 5%
    folder = write_stream(tmp_path / "data", texts)
    stream = stream_of(folder, batch_size=16, max_bad_fraction=0.1)
    kept = examples(stream.loader())
    assert len(kept) == 228 and stream.position.skipped == 12 and stream.position.read == 240
    assert stream.report().reasons == {"empty text": 12}
    strict = stream_of(folder, batch_size=16, max_bad_fraction=0.01)
    with pytest.raises(
        hftl.DataError, match=r"of the first 2\d\d train stream examples .* --max-bad-fraction 0.01"
    ):
        examples(strict.loader())


def test_a_label_beyond_the_scanned_examples_stops_the_stream_naming_it(tmp_path):
    folder = write_stream(tmp_path / "data", unique_texts(30))
    rows = (folder / "train.jsonl").read_text().splitlines()
    rows[25] = json.dumps({"text": "the film", "label": "c"})
    (folder / "train.jsonl").write_text("\n".join(rows) + "\n")
    stream = stream_of(folder, label_scan_examples=10)
    with pytest.raises(
        hftl.DataError, match=r"label 'c' is not in the label set \['a', 'b'\] \(from the first 10"
    ):
        examples(stream.loader())


def test_images_stream_from_a_folder_with_the_labels_of_its_class_folders(image_folder):
    from transformers import ViTImageProcessor

    config = RunConfig(
        task="image", case="small_similar", streaming=True, max_steps=2, dataset=str(image_folder)
    )
    config.batch_size = 5
    splits = stream_splits(config, get_task("image"))
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    inputs = prepare_stream_inputs(splits, "image", processor, config, rank=0, world_size=1)
    batch = next(inputs.stream.batches())
    assert batch["pixel_values"].shape == (5, 3, 32, 32) and batch["pixel_values"].dtype == torch.uint8
    assert set(batch["labels"].tolist()) <= {0, 1, 2} and len(inputs.validation) == 18


def test_a_stream_checks_the_processor_against_the_runs_max_image_pixels(monkeypatch, image_folder):
    """The stream reads the processor once (for its train batches, collators and validation split), against the
    run's --max-image-pixels."""
    from transformers import ViTImageProcessor

    from hftl.data import image_stats

    seen: list[int] = []
    real = image_stats.check_processor_size
    monkeypatch.setattr(
        image_stats, "check_processor_size", lambda p, bound: seen.append(bound) or real(p, bound)
    )
    config = RunConfig(
        task="image",
        case="small_similar",
        streaming=True,
        max_steps=2,
        dataset=str(image_folder),
        max_image_pixels=123_456_789,
    )
    splits = stream_splits(config, get_task("image"))
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    prepare_stream_inputs(splits, "image", processor, config, rank=0, world_size=1)
    assert seen == [123_456_789]
