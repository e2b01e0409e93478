"""Which data and how it is read, and the word vectors that turn texts into inputs."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from hftl.errors import ConfigError
from hftl.settings.choices import (
    OOV_INITS,
    PROBLEM_TYPES,
    VECTOR_ENCODERS,
    VECTOR_FORMATS,
    VECTOR_POOLINGS,
    WORD_SPLITS,
    check_choice,
    check_not_blank,
    check_positive,
    check_range,
    split_names,
)

# 2048 x 2048 pixels: over 25 times the largest classification input (384 x 384), so the processor's own resize
# sees the same picture, while a folder of 10000 x 10000 scans no longer needs gigabytes to decode
DEFAULT_MAX_IMAGE_PIXELS = 2048 * 2048
DEFAULT_VALIDATION_SPLIT = 0.1


@dataclass
class DataSettings:
    """Which data, which columns, how much of it, and how bad rows are treated."""

    section: ClassVar[str] = "data"

    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, image folder, CSV/JSON/Parquet file(s) or a save_to_disk folder; "
            "default: the task card's."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration name of a Hub dataset."}
    )
    input_column: str | None = field(
        default=None, metadata={"help": "Column with the images or texts; default: found from the task card."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Column with the labels; default: found from the task card."}
    )
    label_columns: list[str] | None = field(
        default=None,
        metadata={
            "help": "Multi-label: one 0/1 column per label (e.g. action comedy drama, or action,comedy,drama); the "
            "column names are the label names. Replaces --label-column."
        },
    )
    problem_type: Literal["auto", "single_label", "multi_label"] = field(
        default="auto",
        metadata={
            "help": "single_label: one class per example (softmax); multi_label: any number of labels per example "
            "(a sigmoid per label, BCE loss; a row may have none); auto: multi-label when the label column holds "
            "lists or --label-columns is given."
        },
    )
    text_columns: list[str] | None = field(
        default=None,
        metadata={
            "help": "Text: two columns read as a sentence pair (e.g. premise hypothesis, or premise,hypothesis), "
            "encoded together as transformers' run_glue.py does; replaces --input-column."
        },
    )
    validation_split: float = field(
        default=DEFAULT_VALIDATION_SPLIT,
        metadata={
            "help": "Fraction of train held out (stratified, seeded) when the dataset has no validation split; "
            "--streaming: the examples whose content hash falls in this fraction."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training examples (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "help": "Use at most this many validation examples (quick runs); --streaming: default 10000, the "
            "first ones of the validation stream."
        },
    )
    max_length: int = field(default=128, metadata={"help": "Text: truncate token sequences to this length."})
    augment: bool | None = field(
        default=None,
        metadata={
            "help": "Images: light train-time augmentation (random resized crop and flip). Default: on for runs of "
            "10 epochs or more on images whose content moves (photos), off for shorter runs and registered images "
            "(centred at one size, like Fashion-MNIST): docs/calibration.md, 'Augmentation: hftl's default'."
        },
    )
    max_bad_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Unreadable images and empty texts are skipped and reported; stop when more than this "
            "fraction of a split is bad."
        },
    )
    data_encoding: str = field(
        default="utf-8", metadata={"help": "Text encoding of CSV/TSV/JSON files (e.g. latin-1)."}
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the data as a stream (datasets' streaming=True: Hub datasets, CSV/JSON/JSONL/Parquet files, "
            "image folders) instead of loading it: memory does not grow with the dataset. Needs --max-steps (or "
            "a train split of known length); validation is the first --max-eval-samples examples, kept on disk."
        },
    )
    shuffle_buffer: int = field(
        default=10_000,
        metadata={
            "help": "--streaming: examples held in the shuffle buffer (datasets' IterableDataset.shuffle), re-seeded "
            "on every pass over the stream; larger shuffles better and holds more in memory."
        },
    )
    labels: list[str] | None = field(
        default=None,
        metadata={
            "help": "The label names, in order (e.g. --labels negative positive, or a,b,c; multi-label: the names "
            "the label lists use, not with --label-columns). Default: from the data (a ClassLabel feature, else "
            "the train split's values; --streaming reads at most --label-scan-examples of the stream for them)."
        },
    )
    label_scan_examples: int = field(
        default=100_000,
        metadata={
            "help": "--streaming without --labels or a ClassLabel feature: read the labels of at most this many "
            "train examples to find the label names (and the counts --class-weights auto needs)."
        },
    )
    max_image_pixels: int = field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metadata={
            "help": "Images: decode at most this many pixels per image; larger ones are downscaled as they are "
            "read (JPEGs by the decoder itself), so huge scans cannot exhaust memory. The default, 2048x2048 "
            "(4.2 MP), is over 25 times the largest classification input (384x384): what the model sees is "
            "unchanged. Raising it also lets a model's image processor resize to more than 4096x4096."
        },
    )

    def __post_init__(self) -> None:
        check_not_blank(self, "dataset")
        try:
            codecs.lookup(self.data_encoding)
        except LookupError as error:
            raise ConfigError(
                f"--data-encoding {self.data_encoding!r} is not an encoding Python knows (utf-8, latin-1, cp1252, ...)"
            ) from error
        if self.text_columns is not None:
            names = split_names(self.text_columns)
            if len(names) != 2:
                raise ConfigError(
                    f"--text-columns takes two columns (a sentence pair), got {self.text_columns}"
                )
            self.text_columns = names
        if self.labels is not None:
            self.labels = split_names(self.labels)
            if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
                raise ConfigError(f"--labels takes two or more different label names, got {self.labels}")
        self.label_columns = self._label_columns()
        check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        check_positive(self, "max_length", "max_image_pixels", "shuffle_buffer", "label_scan_examples")
        check_positive(self, "max_train_samples", "max_eval_samples", optional=True)
        check_range("max_bad_fraction", self.max_bad_fraction, 0.0, 1.0)
        check_range("validation_split", self.validation_split, 0.0, 1.0, closed_low=False, closed_high=False)

    def _label_columns(self) -> list[str] | None:
        """``a,b c`` -> ['a', 'b', 'c']; several 0/1 columns are a multi-label task, and only that."""
        if self.label_columns is None:
            return None
        names = split_names(self.label_columns)
        if not names:
            raise ConfigError("--label-columns needs at least one column name (one 0/1 column per label)")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(f"--label-columns names {repeated} more than once")
        if self.label_column is not None:
            raise ConfigError(
                "give either --label-column (one column of labels) or --label-columns (one 0/1 column per "
                "label), not both"
            )
        if self.problem_type == "single_label":
            raise ConfigError(
                "--label-columns makes a multi-label task (one 0/1 column per label); it cannot be "
                "--problem-type single_label"
            )
        if self.labels is not None:
            raise ConfigError(
                "--label-columns names the labels (the column names, in their order); drop --labels"
            )
        return names


@dataclass
class VectorsSettings:
    """Word vectors (``--model vectors:PATH_OR_NAME``): reading them and the classifier on top."""

    section: ClassVar[str] = "vectors"

    vectors_format: Literal["auto", "word2vec-bin", "word2vec-txt", "glove", "kv"] = field(
        default="auto",
        metadata={"help": "Word vectors: file format; auto detects it from the file (extension and header)."},
    )
    vectors_limit: int | None = field(
        default=None,
        metadata={
            "help": "Word vectors: load only the first N vectors (the most frequent words, in most files)."
        },
    )
    vectors_lowercase: bool | None = field(
        default=None,
        metadata={
            "help": "Word vectors: lowercase the texts; default: if the vectors are lowercase (GloVe)."
        },
    )
    vectors_split: Literal["words", "whitespace"] = field(
        default="words",
        metadata={"help": "Word vectors: split texts into words and punctuation, or at whitespace only."},
    )
    vectors_min_freq: int = field(
        default=1, metadata={"help": "Word vectors: vocabulary words occur at least this often in train."}
    )
    vectors_max_vocab: int | None = field(
        default=None, metadata={"help": "Word vectors: keep at most this many (most frequent) words."}
    )
    vectors_oov_init: Literal["random", "zeros", "mean"] = field(
        default="random",
        metadata={
            "help": "Word vectors: rows of words without a vector: random (scaled to the vectors), zeros, mean."
        },
    )
    vectors_pooling: Literal["mean", "max"] = field(
        default="mean",
        metadata={"help": "Word vectors: pool the words of a text by mean or max (padding masked)."},
    )
    vectors_encoder: Literal["bag", "cnn"] = field(
        default="bag",
        metadata={
            "help": "Word vectors: pool the vectors directly (bag) or after a 1-D CNN (kernels 3,4,5)."
        },
    )
    vectors_hidden_size: int = field(
        default=128,
        metadata={"help": "Word vectors: hidden units of the MLP classifier (0: a linear layer)."},
    )

    def __post_init__(self) -> None:
        check_choice("vectors_format", self.vectors_format, VECTOR_FORMATS)
        check_choice("vectors_split", self.vectors_split, WORD_SPLITS)
        check_choice("vectors_oov_init", self.vectors_oov_init, OOV_INITS)
        check_choice("vectors_pooling", self.vectors_pooling, VECTOR_POOLINGS)
        check_choice("vectors_encoder", self.vectors_encoder, VECTOR_ENCODERS)
        check_positive(self, "vectors_min_freq")
        check_positive(self, "vectors_limit", "vectors_max_vocab", optional=True)
        if self.vectors_hidden_size < 0:
            raise ConfigError(f"vectors_hidden_size must be >= 0, got {self.vectors_hidden_size}")
