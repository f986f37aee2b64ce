"""Bound glibc's heap growth during training.

PyTorch's CPU tensors come from ``malloc``. glibc raises its mmap threshold each time a large mmapped
block is freed, so later blocks of that size come from the heap instead, and allocations whose sizes
change every step (the chunked full-catalog loss: the number of targets varies per batch) fragment it:
a Beauty SASRec+ run grew to 7.4 GB of RSS. A fixed threshold keeps large blocks in mmap, returned to
the OS when freed.
"""

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

#: ``mallopt`` parameter number of ``M_MMAP_THRESHOLD`` in glibc's ``malloc.h``
M_MMAP_THRESHOLD = -3


def fix_mmap_threshold(megabytes: float | None) -> bool:
    """Serve allocations of at least ``megabytes`` by mmap from now on (glibc only); ``None`` keeps glibc's
    adaptive threshold. Returns whether a threshold was applied."""
    if megabytes is None or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    applied = bool(libc.mallopt(M_MMAP_THRESHOLD, int(megabytes * 2**20)))
    if not applied:
        log.warning("mallopt(M_MMAP_THRESHOLD, %s MB) was refused; the heap may grow on large catalogs", megabytes)
    return applied
