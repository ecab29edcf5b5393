"""Fixtures shared by the test folders."""

from pathlib import Path

import pytest

from seedkit.data.datasets import shared_videos_dir


@pytest.fixture
def shared_videos() -> Path:
    """The real clips of ``../shared/data/videos`` (or ``$SEEDKIT_SHARED_VIDEOS``); skips the test without them."""
    directory = shared_videos_dir()
    if directory is None:
        pytest.skip("the shared real clips are not available (../shared/data/videos or $SEEDKIT_SHARED_VIDEOS)")
    return directory
