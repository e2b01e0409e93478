"""``python -m hftl.train`` / ``accelerate launch -m hftl.train``: parse flags, merge configs, run. No logic here.

``hftl.train`` is two things: this module (for ``-m``) and the documented function ``hftl.train(...)``. Importing
the module makes it the package attribute, so the module itself is callable and calls the function: ``hftl.train(...)``
works whatever was imported before.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from typing import Any

from hftl.errors import exit_code_of


def main(argv: Sequence[str] | None = None, prog: str = "python -m hftl.train") -> int:
    from hftl.config import explicit_cli_values, resolve_config

    def train() -> int:
        config = resolve_config(explicit_cli_values(argv, prog=prog))
        from hftl.recipes.run import run

        run(config)
        return 0

    return exit_code_of(train)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from hftl.recipes.run import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
