"""Where the optional real assets live (see ../shared/assets/README.md), and skip markers naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import ASSETS, REGISTRY_ASSETS

SHARED = ASSETS  # ../shared/assets beside the repository, or $HFTL_SHARED_ASSETS
CACHE = REGISTRY_ASSETS  # $HFTL_ASSETS_CACHE or ~/.cache/hftl-assets
HYMENOPTERA = SHARED / "hymenoptera_data"
EFFICIENTNET_LITE0 = CACHE / "efficientnet-lite0" / "efficientnet-lite0.pth"


def needs(path: Path, how: str = "run ../shared/assets/get-registry-assets.sh") -> pytest.MarkDecorator:
    """Skip unless ``path`` exists, saying which file is missing and how to get it."""
    return pytest.mark.skipif(not path.exists(), reason=f"real asset {path} is absent ({how})")


def timm_skip_reason() -> str | None:
    """None when timm imports; else why not (it needs a torchvision built for the installed torch)."""
    try:
        import timm  # noqa: F401
    except (ImportError, RuntimeError) as error:
        return f"timm cannot be imported here ({type(error).__name__}: {error}); pip install 'hftl[timm]'"
    return None


needs_timm = pytest.mark.skipif(timm_skip_reason() is not None, reason=timm_skip_reason() or "")
