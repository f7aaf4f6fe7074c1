"""The process settings must actually take on the glibc and CPython this product runs on."""

import gc
import platform
from collections.abc import Iterator

import pytest

from claimcheck import runtime


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="only glibc has malloc arenas to limit")
def test_glibc_accepts_one_arena() -> None:
    assert runtime.use_one_arena() is True


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_garbage_collector_is_frozen_and_calmer(restored_gc: None) -> None:
    runtime.calm_garbage_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == runtime.GC_THRESHOLDS
