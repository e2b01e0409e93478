"""hftl's augmentation default: the flag when given; else off for short runs, streams, text and registered images,
and on for long runs on images whose content moves, measured by the mean image correlation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from datasets import Dataset

from hftl.data import augmentation
from hftl.data.image_stats import ImageStats
from hftl.data.preprocess import ImageCollator, ModelInputs
from tests.helpers import quick_train

SIDE = 28


def blobs(count: int, *, moving: bool, seed: int = 0) -> np.ndarray:
    """Bright squares on noise: at the centre at one size (registered, like Fashion-MNIST) or anywhere at any size."""
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(40, 20, (count, SIDE, SIDE)), 0, 255)
    for image in images:
        half = int(rng.integers(3, 9)) if moving else 7
        y, x = rng.integers(half, SIDE - half, 2) if moving else (SIDE // 2, SIDE // 2)
        image[y - half : y + half, x - half : x + half] = 220
    return images.astype(np.uint8)


def inputs_of(images: np.ndarray) -> ModelInputs:
    """Model-ready inputs as a run holds them: uint8 RGB pixels, channels first, one bytes value per image."""
    stats = ImageStats(SIDE, SIDE, 1 / 255, (0.5,) * 3, (0.5,) * 3)
    rows = [np.repeat(image[None], 3, axis=0).tobytes() for image in images]
    train = Dataset.from_dict({"pixel_values": rows, "labels": [0] * len(rows)})
    collator = ImageCollator(stats, augment=False, seed=0)
    return ModelInputs(train, train, collator, ImageCollator(stats, augment=False, seed=0), image_stats=stats)


def test_the_mean_image_correlation_tells_registered_images_from_moving_ones():
    correlation = augmentation.mean_image_correlation
    registered, moving = (
        correlation(inputs_of(blobs(200, moving=False))),
        correlation(inputs_of(blobs(200, moving=True))),
    )
    assert registered >= augmentation.REGISTERED + 0.2 and moving < augmentation.REGISTERED - 0.2
    # each image is compared with the average of the others: a few images do not look registered by matching
    # themselves, one image carries no evidence, and blank images (no layout) are left out
    for n in (3, 8):  # unbiased: noisier on few images, not higher (with itself in the average: 0.62 at 3)
        few = [correlation(inputs_of(blobs(n, moving=True, seed=seed))) for seed in range(4)]
        assert sum(few) / len(few) < augmentation.REGISTERED - 0.1
    assert correlation(inputs_of(blobs(1, moving=False))) == 0.0
    half_blank = np.concatenate([blobs(50, moving=False), np.zeros((50, SIDE, SIDE), dtype=np.uint8)])
    assert abs(correlation(inputs_of(half_blank)) - registered) < 0.05
    # past SAMPLE images a fixed sample is read, the same whatever the run's seed, in chunks
    many = blobs(augmentation.SAMPLE + 100, moving=True, seed=1)
    assert abs(correlation(inputs_of(many)) - correlation(inputs_of(many[: augmentation.SAMPLE]))) < 0.03


def test_the_default_follows_the_epochs_and_the_registration_and_a_flag_wins():
    decide = augmentation.decide_augmentation
    registered, moving = inputs_of(blobs(64, moving=False)), inputs_of(blobs(64, moving=True))
    long = augmentation.MIN_EPOCHS

    on = decide(None, "image", long, moving)
    assert on.augment and on.correlation is not None and "content moves" in on.reason
    off = decide(None, "image", long, registered)
    assert not off.augment and off.correlation >= augmentation.REGISTERED and "registered" in off.reason
    short = decide(None, "image", long - 1, moving)
    assert not short.augment and short.correlation is None and f"fewer than {long}" in short.reason
    # a flag is obeyed whatever the evidence, and says so
    assert decide(True, "image", 1, registered) == augmentation.Augmentation(True, "--augment true")
    assert not decide(False, "image", 50, moving).augment
    # a resumed run keeps its run's choice (its checkpoints were trained that way), at any epochs
    assert decide(None, "image", 1, registered, resumed=True).augment
    assert not decide(None, "image", 50, moving, resumed=False).augment
    # text never augments; a stream is not read ahead (it passes over its data about once)
    assert not decide(None, "text", 50, moving).augment
    streamed = SimpleNamespace(stream=object())
    assert not decide(None, "image", 50, streamed).augment  # type: ignore[arg-type]


def test_the_decision_reaches_the_training_collator_and_not_the_evaluation_one():
    inputs = inputs_of(blobs(8, moving=True))
    augmentation.apply(augmentation.Augmentation(True, "--augment true"), inputs)
    assert inputs.train_collator.augment and not inputs.eval_collator.augment


@pytest.mark.parametrize("flag", [None, True])
def test_a_run_records_what_it_decided_and_trains_with_it(resnet_dir, image_folder, tmp_path, flag):
    settings = {} if flag is None else {"augment": flag}
    result = quick_train(
        "image", "large_similar", resnet_dir, image_folder, tmp_path / "run", epochs=1, **settings
    )
    recorded = result.metrics["augmentation"]
    assert result.config.augment is recorded["augment"] is (flag is True)
    assert recorded["reason"] == ("--augment true" if flag else f"1 epochs, fewer than {augmentation.MIN_EPOCHS}: "
                                  "too few passes to overfit, off (--augment turns it on)")  # fmt: skip
    assert (tmp_path / "run" / "run_config.yaml").read_text().count(
        f"augment: {str(flag is True).lower()}"
    ) == 1


def test_the_command_line_takes_both_spellings_and_leaves_the_default_to_the_run():
    from hftl.cli_args import parse_explicit
    from hftl.config import build_parser

    parser = build_parser()
    base = ["--task", "image", "--case", "small_similar"]
    assert "augment" not in parse_explicit(parser, base)
    assert parse_explicit(parser, [*base, "--augment"])["augment"] is True
    assert parse_explicit(parser, [*base, "--no-augment"])["augment"] is False
    assert parse_explicit(parser, [*base, "--augment", "false"])["augment"] is False


def test_a_resume_keeps_the_augmentation_its_run_chose(tmp_path):
    """A resumed run keeps what its run_config.yaml says (its checkpoints were trained that way, and the resume
    fingerprint holds it), even at epochs where the rule would choose otherwise; a flag still wins, and a folder
    without a readable run_config.yaml leaves the choice to the rule."""
    from hftl.config import RunConfig
    from hftl.training.resume import resumed_augment

    def config(**settings):
        return RunConfig(
            task="image", case="small_similar", output_dir=str(tmp_path), resume="auto", **settings
        )

    assert resumed_augment(config()) is None
    (tmp_path / "run_config.yaml").write_text("task: image\naugment: true\nepochs: 3\n", encoding="utf-8")
    assert resumed_augment(config()) is True
    assert resumed_augment(config(augment=False)) is None
    assert resumed_augment(RunConfig(task="image", case="small_similar", output_dir=str(tmp_path))) is None
    (tmp_path / "run_config.yaml").write_text("augment: [1]\n", encoding="utf-8")
    assert resumed_augment(config()) is None
