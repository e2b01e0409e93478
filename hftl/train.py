"""``python -m hftl.train`` / ``accelerate launch -m hftl.train``: parse flags, merge configs, run. No logic here."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hftl.config import explicit_cli_values, resolve_config
from hftl.errors import HftlError


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = resolve_config(explicit_cli_values(argv))
        from hftl.run import run

        run(config)
    except HftlError as error:
        print(f"hftl: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
