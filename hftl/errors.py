"""Errors a user can act on: each one says what was wrong and what the valid choices are."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable


class HftlError(Exception):
    """Base class for every error hftl raises on purpose (bad settings, data or models)."""


class ConfigError(HftlError, ValueError):
    """A setting is missing, unknown or out of range."""


class DataError(HftlError, ValueError):
    """The dataset cannot be used as given (missing column, bad label, empty split, bad file)."""


class ModelError(HftlError, ValueError):
    """The model cannot be loaded or its architecture is not supported."""


class OutputError(HftlError):
    """A result cannot be written (the disk is full, the quota is exceeded): the message names the path and what
    to do, and nothing half-written is left behind."""


def unknown_choice(kind: str, value: object, valid: Iterable[str], hint: str = "") -> ConfigError:
    """Build the error for a value that is not one of ``valid``, with a did-you-mean suggestion."""
    valid = list(valid)
    message = f"unknown {kind} {value!r}; valid {kind}s: {', '.join(valid)}"
    close = (
        difflib.get_close_matches(str(value), valid, n=1)
        or [v for v in valid if v.startswith(str(value))][:1]
    )
    if close:
        message += f" (did you mean {close[0]!r}?)"
    if hint:
        message += f". {hint}"
    return ConfigError(message)


def first_line(error: BaseException) -> str:
    """An error's first line, or its type's name when it has no message (a bare ``MemoryError()``): what an hftl
    error quotes of a library's longer one."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def exit_code_of(command: Callable[[], int]) -> int:
    """Run a command line's work: an hftl error is one line on stderr (exit 2), and Ctrl-C one line saying how to
    continue (exit 130, the shell's), never a traceback."""
    try:
        return command()
    except HftlError as error:
        print(f"hftl: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "hftl: interrupted. A training run continues from its newest checkpoint with --resume auto.",
            file=sys.stderr,
        )
        return 130
