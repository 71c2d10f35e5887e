"""Peak resident memory of a run: its own process and each of its worker processes.

The process's own peak is exact (``ru_maxrss``; each run has a fresh process). Worker
processes are sampled every 50 ms with psutil, so a worker's figure is the
highest value seen, which can miss a peak shorter than the interval; the largest
worker's exact peak is also read from ``RUSAGE_CHILDREN`` once the workers are reaped.
"""

from __future__ import annotations

import resource
import sys
import threading

import psutil


def _mb(kilobytes: int) -> float:
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    return round(kilobytes / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    return _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _is_worker(proc: psutil.Process) -> bool:
    try:
        return any("spawn_main" in part or "forkserver" in part for part in proc.cmdline())
    except psutil.Error:
        return False


class PeakMemory:
    """Use as a context manager around a run; :meth:`report` afterwards."""

    def __init__(self, interval: float = 0.05, rescan_every: int = 10):
        self.interval = interval
        self.rescan_every = rescan_every  # listing children scans /proc: not every sample
        self._workers: dict[int, int] = {}
        self._known: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._me = psutil.Process()

    def _sample(self) -> None:
        ticks = 0
        while not self._stop.wait(self.interval):
            if ticks % self.rescan_every == 0:
                self._rescan()
            ticks += 1
            for pid, proc in list(self._known.items()):
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    del self._known[pid]
                    continue
                self._workers[pid] = max(rss, self._workers.get(pid, 0))

    def _rescan(self) -> None:
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            if child.pid not in self._known and child.pid not in self._workers and _is_worker(child):
                self._known[child.pid] = child

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, object]:
        return {
            "parent_peak_mb": peak_rss_mb(),
            "worker_peak_mb": sorted((round(v / 2**20, 1) for v in self._workers.values()), reverse=True),
            "children_max_peak_mb": _mb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
        }
