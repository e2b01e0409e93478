"""Tiny models built from configs and small learnable datasets generated here: the suite never needs the Hub."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bench.tiny_models import FILLER, NEGATIVE, POSITIVE, SPECIAL, make_bert, quiet_and_seeded  # noqa: F401 (the fixtures' words and builder, imported by tests from here)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tiny models gain nothing from intra-op threads, and on a busy machine their barriers cost ~100 ms per step
os.environ.setdefault("OMP_NUM_THREADS", "1")
# dataset Arrow files and hftl's feature/probe caches go to a throw-away folder, never the user's ~/.cache
_DATASETS_CACHE = tempfile.mkdtemp(prefix="hftl-tests-datasets-")
os.environ.setdefault("HF_DATASETS_CACHE", _DATASETS_CACHE)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_DATASETS_CACHE, ignore_errors=True)


COLORS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
REPO_ROOT = Path(__file__).resolve().parents[1]


def make_vit(path: Path, num_layers: int = 4) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    quiet_and_seeded()
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        num_labels=7,
    )
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def make_resnet(path: Path) -> Path:
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    quiet_and_seeded()
    config = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 24, 32],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        num_labels=7,
    )
    ResNetForImageClassification(config).save_pretrained(path)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(path)
    return path


def write_image_folder(
    root: Path, per_class: tuple[int, int] = (16, 6), size: int = 40, seed: int = 0
) -> Path:
    """imagefolder layout (train/, validation/) with classes told apart by their dominant colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "validation"), per_class, strict=True):
        for label, rgb in COLORS.items():
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = rng.normal(0, 30, size=(size, size, 3))
                pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{label}_{i}.png")
    return root


def sentences(count: int, seed: int) -> list[tuple[str, str]]:
    """Short reviews whose sentiment word decides the label; filler words are shared by both classes."""
    rnd = random.Random(seed)
    rows = []
    for i in range(count):
        label = "positive" if i % 2 == 0 else "negative"
        words = rnd.sample(FILLER, 4) + [rnd.choice(POSITIVE if label == "positive" else NEGATIVE)]
        rnd.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_text_csv(root: Path, sizes: tuple[int, int] = (64, 24), seeds: tuple[int, int] = (1, 2)) -> Path:
    import csv

    root.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", sizes[0], seeds[0]), ("validation", sizes[1], seeds[1])):
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(sentences(count, seed))
    return root


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_vit(tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture(scope="session")
def resnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_resnet(tmp_path_factory.mktemp("tiny-resnet"))


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT 'pretrained' on a source sentiment set (other sentences), so its features carry the signal:
    the develop-a-source-model route to a real transfer without the Hub."""
    import hftl

    random_bert = make_bert(tmp_path_factory.mktemp("tiny-bert-random"))
    source = write_text_csv(tmp_path_factory.mktemp("source-reviews"), sizes=(96, 24), seeds=(11, 12))
    out = tmp_path_factory.mktemp("tiny-bert")
    result = hftl.train(
        task="text",
        case="large_similar",
        model=str(random_bert),
        dataset=str(source),
        output_dir=str(out),
        epochs=12,
        batch_size=8,
        lr=3e-3,
        warmup_ratio=0.0,
        save_total_limit=1,
    )
    assert result.metrics["best"]["eval_accuracy"] == 1.0, "the source model must learn its task"
    return out


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="session")
def text_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_csv(tmp_path_factory.mktemp("reviews"))


@pytest.fixture(scope="session")
def model_dirs(vit_dir: Path, resnet_dir: Path, bert_dir: Path) -> dict[str, Path]:
    return {"vit": vit_dir, "resnet": resnet_dir, "bert": bert_dir}


@pytest.fixture(scope="session")
def data_for(image_folder: Path, text_folder: Path) -> dict[str, tuple[str, Path]]:
    """family -> (task, dataset path)."""
    return {"vit": ("image", image_folder), "resnet": ("image", image_folder), "bert": ("text", text_folder)}


# --- word vectors ---------------------------------------------------------------------------------------------------
VECTORS_MISSING = ("acting", "plot")  # review words left out of the vectors: the OOV path is always exercised


def write_word_vectors(path: Path, dim: int = 8, seed: int = 0) -> Path:
    """GloVe-format vectors (no header) for the review words: positive and negative words lie apart on the first
    axis, filler words on the second, the rest is noise; plus a few words the reviews never use."""
    rng = np.random.default_rng(seed)
    words = [w for w in POSITIVE + NEGATIVE + FILLER if w not in VECTORS_MISSING] + [
        "cinema",
        "music",
        "song",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for word in words:
            vector = rng.normal(0.0, 0.2, dim)
            vector[0] += 2.0 if word in POSITIVE else -2.0 if word in NEGATIVE else 0.0
            vector[1] += 2.0 if word in FILLER else 0.0
            handle.write(word + " " + " ".join(f"{x:.5f}" for x in vector) + "\n")
    return path


@pytest.fixture(scope="session")
def glove_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_word_vectors(tmp_path_factory.mktemp("vectors") / "glove.txt")


@pytest.fixture(scope="session")
def vectors_dir(glove_file: Path, text_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-vector classifier trained through the CLI's entry point, in this process (small_similar with
    --strategy head: frozen vectors, new MLP); what it printed is kept in ``stdout.txt``."""
    import contextlib
    import io

    from hftl.train import main

    out = tmp_path_factory.mktemp("vectors-run")
    args = [
        "--task",
        "text",
        "--case",
        "small_similar",
        "--strategy",
        "head",
        "--model",
        f"vectors:{glove_file}",
    ]
    args += ["--dataset", str(text_folder), "--output-dir", str(out), "--epochs", "4", "--batch-size", "8"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*args, "--lr", "0.01", "--save-total-limit", "1"]) == 0
    (out / "stdout.txt").write_text(printed.getvalue(), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def bert_lora_run(bert_dir: Path, text_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny BERT adapted with LoRA for one epoch (an adapter folder: base + adapter when loaded)."""
    from tests.helpers import quick_train

    out = tmp_path_factory.mktemp("bert-lora")
    return quick_train("text", "large_similar", bert_dir, text_folder, out, strategy="lora", epochs=1)
