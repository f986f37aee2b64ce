"""The glibc mmap threshold is applied on Linux and training reads it from the config."""

import ctypes
import sys

import pytest

from rectorch.training.memory import fix_mmap_threshold


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_fixed_threshold_serves_large_blocks_by_mmap() -> None:
    assert fix_mmap_threshold(4)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # glibc raises an adaptive threshold to the size of a freed mmapped block; a fixed one stays put,
    # so a 6 MB block is mmapped again after an 8 MB one was freed (its address is page aligned + 16)
    libc.free(libc.malloc(8 << 20))
    block = libc.malloc(6 << 20)
    try:
        assert block % 4096 == 16
    finally:
        libc.free(block)
