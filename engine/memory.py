"""Memory given back: large buffers (answers, bodies, decoded upstream reads) come from their own mappings.

glibc serves an allocation of 128 KiB or more from its own `mmap`, returned to the OS when freed, but it raises
that threshold to the size of every such block freed (up to 32 MiB): after the first 10 MiB answer, every later
one comes from the heap, and the heap keeps what it held at its peak. A burst of large answers (clients that do
not read, a gzip bomb stopped at the cap) would leave the process at that peak for good. A fixed threshold
turns the adjustment off: a buffer of `LARGE` bytes or more is always mapped, and unmapped when freed. Smaller
allocations, the hot path's, are untouched.
"""

from __future__ import annotations

import contextlib
import ctypes

LARGE = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def give_back_large_buffers(threshold: int = LARGE) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes in this process; False where that is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, threshold))
    return False
