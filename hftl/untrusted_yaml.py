"""YAML that hftl reads from disk (run configs, task cards, a run folder's ``run_config.yaml``) is untrusted input:
``yaml.safe_load`` builds no Python objects, but it still expands aliases, so a 2 KB file of nested ``*anchors`` can
become gigabytes (a "billion laughs"), and a self-referencing anchor a recursive structure. hftl's own files never use
aliases, so they are refused."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses ``*alias`` references (anchors alone are harmless)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"an alias (*{event.anchor}) repeats another part of the file", event.start_mark
            )
        return super().compose_node(parent, index)


def load_untrusted_yaml(text: str) -> Any:
    """Parse YAML text as ``yaml.safe_load`` does, refusing aliases (``yaml.YAMLError``, like any parse error)."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
