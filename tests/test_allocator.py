"""The allocator setting: arrays freed by one field are reused by the next, not handed
back to the kernel and faulted in again (see openhcs_omero_lib/execution/allocator.py).

Page faults are counted by the kernel, not timed: the test asserts no timing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    if sys.argv[1] == "keep":
        from openhcs_omero_lib.execution.allocator import keep_freed_memory
        assert keep_freed_memory()

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def one_field():  # three 2.4 MB temporaries, freed together, as an operation's are
        arrays = [np.ones(300_000) for _ in range(3)]
        del arrays

    for _ in range(5):
        one_field()
    before = faults()
    for _ in range(50):
        one_field()
    print(faults() - before)
""")


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="the setting is glibc's")
def test_freed_arrays_are_reused_without_page_faults():
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout)

    default, kept = faults("default"), faults("keep")
    # glibc's own thresholds give the memory back and fault it in again every field
    assert default > 50 * 3 * 100
    assert kept < 500


def test_setting_it_twice_is_harmless():
    from openhcs_omero_lib.execution.allocator import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() == first
