"""A command line derived from settings dataclasses, without importing torch or transformers.

transformers' ``HfArgumentParser`` does the same job, but importing it loads transformers (about a second, and more
on a busy machine) just to print ``--help``. This builder reads the same ``field(metadata={"help": ...})`` and keeps
HfArgumentParser's flags: ``--name`` and ``--name-with-dashes``/``--name_with_underscores``, ``--flag`` / ``--flag
false`` for booleans, ``--no-flag`` for booleans that default to on or that the run decides, choices for
``Literal`` fields and one or more values for lists. Defaults are shown in the help, never injected: a parse returns
only what was typed, so the lower layers (YAML file, task card) can fill the rest.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, Field, fields
from typing import Any, Literal


def to_bool(value: str | bool) -> bool:
    """``true/false``, ``yes/no``, ``1/0`` (any case), as HfArgumentParser reads them."""
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def positive_int(value: str) -> int:
    """An argparse type: a whole number >= 1 (a batch size, a count of labels)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


# what transformers' Trainer (and its example scripts) call hftl's settings: a user's first guess, named in the error
TRAINER_NAMES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "train_batch_size": "batch_size",
    "model_name_or_path": "model",
    "dataset_name": "dataset",
    "lr_scheduler_type": "scheduler",
    "evaluation_strategy": "eval_strategy",
    "logging_steps": "log_steps",
    "save_strategy": "save_steps",
    "load_best_model_at_end": "metric_for_best",
    "output": "output_dir",
    "out": "output_dir",
}


class SettingsParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors come first, with a did-you-mean, and one line of usage (not 60). Flags are
    never abbreviated: ``--warmup`` would match both spellings of ``--warmup-ratio`` and fail, ``--out`` too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> typing.NoReturn:
        hint = ""
        if message.startswith("unrecognized arguments:"):
            known = [action.option_strings[0] for action in self._actions if action.option_strings]  # dashed
            for word in message.split(":", 1)[1].split():
                name = word.split("=")[0]
                ours = TRAINER_NAMES.get(name.lstrip("-").replace("-", "_"))
                close = [flag_names(ours)[0]] if ours else difflib.get_close_matches(name, known, n=1)
                if close:
                    hint = f" (did you mean {close[0]}?)"
                    break
        sys.stderr.write(f"{self.prog}: error: {message}{hint}\n")
        sys.stderr.write(f"usage: {self.prog} [options]; see `{self.prog} --help`\n")
        sys.exit(2)


def flag_names(name: str) -> list[str]:
    """``--batch-size`` first (what the help shows), then ``--batch_size``."""
    dashed = f"--{name.replace('_', '-')}"
    return [dashed, f"--{name}"] if "_" in name else [dashed]


def _unwrap_optional(kind: Any) -> Any:
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else kind
    return kind


def _default_text(field: Field) -> str:
    default = field.default if field.default is not MISSING else None
    if default is None or default == "":
        return ""
    return f" (default: {default})"


def add_settings(parser: argparse.ArgumentParser, section: type, title: str | None = None) -> None:
    """One argument group per settings dataclass, one flag (plus its spellings) per field."""
    hints = typing.get_type_hints(section)
    doc = (section.__doc__ or "").strip().splitlines()[0] if section.__doc__ else None
    group = parser.add_argument_group(title or getattr(section, "section", section.__name__), doc)
    for field in fields(section):
        kind = _unwrap_optional(hints[field.name])
        optional = kind is not hints[field.name]
        help_text = (field.metadata.get("help", "") + _default_text(field)).replace("%", "%%")
        names = flag_names(field.name)
        common: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS}
        if "parse" in field.metadata:  # a value with its own syntax (``--lr 3e-4`` or ``--lr auto``)
            group.add_argument(*names, type=_argparse_type(field.metadata["parse"]), help=help_text, **common)
        elif kind is bool:
            group.add_argument(
                *names, type=to_bool, nargs="?", const=True, metavar="true|false", help=help_text, **common
            )
            if field.default is True or (optional and field.default is None):  # on by default, or decided
                negative = [f"--no-{field.name.replace('_', '-')}", f"--no_{field.name}"]
                group.add_argument(*negative, action="store_false", help=f"Turn off {names[0]}.", **common)
        elif typing.get_origin(kind) is Literal:
            choices = [str(choice) for choice in typing.get_args(kind)]
            group.add_argument(*names, type=str, choices=choices, help=help_text, **common)
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            group.add_argument(*names, type=item, nargs="+", help=help_text, **common)
        else:
            group.add_argument(*names, type=kind, help=help_text, **common)


def _argparse_type(parse: Any) -> Any:
    """A settings parser as an argparse ``type``: its error becomes argparse's one-line error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    convert.__name__ = parse.__name__
    return convert


def parse_explicit(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> dict[str, Any]:
    """The flags the user typed, and only those (every default is suppressed)."""
    return vars(parser.parse_args(sys.argv[1:] if argv is None else list(argv)))
