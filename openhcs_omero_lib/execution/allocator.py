"""The C allocator, set up for computing field after field.

Every field allocates and frees the same large arrays (a 256 px float32 plane is 256
KiB; a 2048 px one 16 MiB). glibc's malloc serves such blocks either with ``mmap``,
returning them to the system on ``free``, or from the heap, whose top it also gives
back (``trim``) once more than a threshold is free there; both thresholds move with
what was freed last. Which of these happens depends on where the first arrays landed
relative to the interpreter's own objects, so the same loop runs in one process
with a few thousand page faults and in another with four hundred per field: every
array then comes back from the kernel as fresh zeroed pages, a third of the time of
a small field. Fixed thresholds make the freed blocks stay in the process to be
reused by the next field: the peak memory is unchanged (it is the same arrays), only
the pages are not handed back and forth.
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
TRIM_THRESHOLD = 256 * 2**20
"""Free memory at the heap's top kept before any is returned."""
MMAP_THRESHOLD = 32 * 2**20
"""Blocks from this size up are mapped and unmapped (glibc's largest dynamic value)."""

_done = False


def keep_freed_memory() -> bool:
    """Set the thresholds (once per process; glibc only). Whether they are set."""
    global _done
    if _done:
        return True
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        libc = ctypes.CDLL(None)
        _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, ValueError, AttributeError):  # not glibc, or no confstr
        return False
    return _done
