"""Keep freed memory in the process for the next tensors (glibc's malloc, Linux).

Why: glibc gives every large allocation its own ``mmap`` and returns it to the system when it is
freed, so the next tensor of that size pays one page fault per 4 KiB page when first written. A
training step allocates the same tensors every iteration; on a CPU it spent up to half of its
time in those faults (``benchmarks/performance.md``: an AT-BSN teacher step 1.8x, a
Neighbor2Neighbor step 2.1x faster without them). With mmap off and the heap never trimmed, freed
tensors are reused as they are. The cost: the process keeps its peak (its RSS does not shrink
after it) and fragmentation can add to that peak (+40% measured for one 1-MP teacher inference),
so ``train.py`` does this for the whole run, while inference (``atbsn.inference``) does it only
around a network's tiles (:func:`freed_memory_reused`) and gives the memory back after them.
``ATBSN_MALLOC=system`` in the environment turns both off.

Why the first few tensors of a size can still be faulted in: torch allocates with
``posix_memalign``, which cuts small pieces off each block; glibc keeps those in its per-thread
cache, where they stay "in use" and keep a freed block from merging with its neighbours, so a block
of exactly the freed size does not fit the next request (which asks for alignment slack) and the
heap grows by another. After a few tensors of a size, merged free blocks fit and every tile reuses
them (measured in 45 runs: up to 6 more 64-MB tensors faulted in after the first; with
``GLIBC_TUNABLES=glibc.malloc.tcache_count=0`` none, but that can only be set before the process starts).
"""
from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

ENV = "ATBSN_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # mallopt parameters (malloc.h)
# After a freed_memory_reused block: glibc's default mmap count, and the thresholds its dynamic
# adjustment settles at on photos (any mallopt call turns that adjustment off for good; left at
# their 128-KB starting values, every tensor above them would be mmapped and faulted in afresh).
_AFTER = {_M_MMAP_MAX: 65536, _M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 64 * 2**20}
_kept_for_good = False
_depth = 0  # freed_memory_reused blocks open


def _glibc() -> Optional[ctypes.CDLL]:
    if os.environ.get(ENV, "").lower() == "system" or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
        libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError):
        return None
    return libc


def _keep(libc: ctypes.CDLL) -> bool:
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def keep_freed_memory() -> bool:
    """Switch glibc's malloc to reuse freed memory; False (and nothing changed) where it cannot
    (not Linux/glibc) or where ``ATBSN_MALLOC=system``."""
    global _kept_for_good
    libc = _glibc()
    _kept_for_good = bool(libc) and _keep(libc)
    return _kept_for_good


@contextmanager
def freed_memory_reused() -> Iterator[bool]:
    """:func:`keep_freed_memory` for one block of work, then the freed memory goes back to the
    system (``malloc_trim``) and glibc's settled defaults return (``_AFTER``). For a network's
    tiles: every tile allocates the same activations, and on a 12-MP photo their page faults were
    a third of the network's time. The steps after it run with glibc's defaults, so the process's
    peak stays theirs (with reuse left on throughout, fragmentation added 19% to the peak of a
    folder with a 24-MP photo; without the trim, 8% to a 12-MP photo's). Yields whether reuse is
    on; nests; a no-op under :func:`keep_freed_memory` (train.py)."""
    global _depth
    libc = None if _kept_for_good or _depth else _glibc()
    if libc is None or not _keep(libc):
        yield _kept_for_good or _depth > 0
        return
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        for param, value in _AFTER.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)
