"""The allocator tweak must actually take on the glibc this product runs on (Debian, the image)."""

import platform

import pytest

from claimcheck import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="only glibc has malloc arenas to limit")
def test_glibc_accepts_one_arena() -> None:
    assert allocator.use_one_arena() is True
