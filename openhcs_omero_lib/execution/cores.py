"""How many cores this process may use: a module of its own, so that the command line
can offer its ``--workers`` default without importing the executor (numpy, scipy)."""

from __future__ import annotations

import os


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


__all__ = ["available_cores"]
