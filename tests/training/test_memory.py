"""The fixed glibc mmap threshold: a large block is mmapped even after a larger one was freed."""

import subprocess
import sys

import pytest

# glibc raises an adaptive threshold to the size of a freed mmapped block, so a 6 MB block that follows a
# freed 8 MB one comes from the heap; with a fixed 4 MB threshold it is mmapped again (its address is then
# page aligned + 16). Run in a fresh interpreter: a long-lived heap may hold a free 6 MB chunk already.
PROBE = """
import ctypes, sys
from rectorch.training.memory import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold(4)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
libc.free(libc.malloc(8 << 20))
print(libc.malloc(6 << 20) % 4096 == 16)
"""


def mmapped(mode: str) -> bool:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return result.stdout.strip() == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_fixed_threshold_keeps_large_blocks_in_mmap() -> None:
    assert mmapped("fixed")
    assert not mmapped("adaptive")
