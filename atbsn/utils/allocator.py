"""Keep freed memory in the process for the next tensors (glibc's malloc, Linux).

Why: glibc gives every large allocation its own ``mmap`` and returns it to the system when it is
freed, so the next tensor of that size pays one page fault per 4 KiB page when first written. A
training step allocates the same tensors every iteration; on a CPU it spent up to half of its
time in those faults (``benchmarks/performance.md``: an AT-BSN teacher step 1.8x, a
Neighbor2Neighbor step 2.1x faster without them). With mmap off and the heap never trimmed, freed
tensors are reused as they are. The cost: the process keeps its peak (its RSS does not shrink
after it) and fragmentation can add to that peak (+40% measured for one 1-MP teacher inference),
so ``train.py`` does this and ``valid.py`` / ``test.py``, whose images can be large, do not.
``ATBSN_MALLOC=system`` in the environment turns it off.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV = "ATBSN_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Switch glibc's malloc to reuse freed memory; False (and nothing changed) where it cannot
    (not Linux/glibc) or where ``ATBSN_MALLOC=system``."""
    if os.environ.get(ENV, "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
        libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
