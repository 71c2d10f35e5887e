"""Running a pipeline over every unit of a plate, in worker processes.

Workers are started with the ``spawn`` method, which is safe inside a process that
already runs threads (an OMERO script holds Ice threads); each worker opens its own
pixel source once from a :class:`~.pixels.SourceSpec` and keeps it for every unit it
is given. Units travel in small chunks and only result rows come back, so memory is
bounded by one unit per worker whatever the plate size. A failing unit becomes an
error row and the run goes on. Results come back in plate order, identical for any
number of workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.util import Finalize
from typing import Callable, Sequence

from .layout import SiteUnit
from .pipeline.run import run_unit, unit_reader
from .pipeline.spec import PipelineSpec
from .pixels import PixelSource, SourceSpec, open_source

ProgressCallback = Callable[[int, int, int], None]
"""``(units done, units in all, errors so far)``"""


@dataclass(frozen=True)
class UnitResult:
    index: int
    unit: SiteUnit
    measurements: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_one(spec: PipelineSpec, source: PixelSource, index: int, unit: SiteUnit) -> UnitResult:
    start = time.perf_counter()
    try:
        row = run_unit(spec, unit_reader(source, unit))
        return UnitResult(index, unit, row, None, time.perf_counter() - start)
    except Exception as exc:  # a unit's failure is data, not the run's end
        # OMERO's exceptions carry the server's reason in .message; str() says only their type.
        reason = getattr(exc, "message", None) or str(exc)
        message = f"{type(exc).__name__}: {reason}".splitlines()[0]
        return UnitResult(index, unit, {}, message, time.perf_counter() - start)


# ---- worker side ------------------------------------------------------------------

_worker: dict[str, object] = {}


def _init_worker(source_spec: SourceSpec, pipeline: dict) -> None:
    # The parent decides about Ctrl-C; workers must not die half-way on their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker["source"] = open_source(source_spec)
    _worker["spec"] = PipelineSpec.model_validate(pipeline)
    # Runs at the worker's normal exit (multiprocessing does not run atexit there).
    Finalize(None, _close_worker, exitpriority=10)


def _run_chunk(chunk: list[tuple[int, SiteUnit]]) -> list[UnitResult]:
    source = _worker["source"]
    spec = _worker["spec"]
    try:
        return [_run_one(spec, source, i, u) for i, u in chunk]  # type: ignore[arg-type]
    except BaseException:
        traceback.print_exc()
        raise


def _close_worker() -> None:
    source = _worker.pop("source", None)
    if source is not None:
        source.close()  # type: ignore[attr-defined]


# ---- parent side ------------------------------------------------------------------

def _chunks(units: Sequence[SiteUnit], workers: int, chunk_size: int | None) -> list[list[tuple[int, SiteUnit]]]:
    indexed = list(enumerate(units))
    if chunk_size is None:
        # Several chunks per worker balance the load; not so many that overhead shows.
        chunk_size = max(1, min(16, len(indexed) // (workers * 4) or 1))
    return [indexed[i:i + chunk_size] for i in range(0, len(indexed), chunk_size)]


class Cancelled(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM: OMERO cancelling a script job)."""


@contextlib.contextmanager
def _sigterm_cancels():
    """While workers run, SIGTERM stops them as Ctrl-C does, instead of killing this
    process and leaving them orphaned. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancel(signum, frame):
        raise Cancelled("terminated")

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_units(spec: PipelineSpec, source: PixelSource, units: Sequence[SiteUnit] | None = None,
              workers: int = 1, progress: ProgressCallback | None = None,
              chunk_size: int | None = None) -> list[UnitResult]:
    """Run a bound pipeline over ``units`` (default: every unit of the plate).

    With ``workers == 1`` the work runs in this process on ``source``; otherwise
    each of ``workers`` spawned processes opens its own source from
    ``source.spec()``. Ctrl-C (KeyboardInterrupt) or SIGTERM (:class:`Cancelled`)
    stops the workers and is re-raised.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    units = list(source.layout.units()) if units is None else list(units)
    if progress:
        progress(0, len(units), 0)
    if workers == 1 or len(units) <= 1:
        return _run_here(spec, source, units, progress)
    with _sigterm_cancels():
        return _run_in_workers(spec, source, units, workers, progress, chunk_size)


def _run_here(spec, source, units, progress) -> list[UnitResult]:
    results: list[UnitResult] = []
    errors = 0
    for i, unit in enumerate(units):
        result = _run_one(spec, source, i, unit)
        results.append(result)
        errors += result.error is not None
        if progress:
            progress(len(results), len(units), errors)
    return results


def _run_in_workers(spec, source, units, workers, progress, chunk_size) -> list[UnitResult]:
    results: list[UnitResult] = []
    errors = 0
    chunks = _chunks(units, workers, chunk_size)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=get_context("spawn"),
                               initializer=_init_worker,
                               initargs=(source.spec(), spec.model_dump(mode="json")))
    try:
        pending = {pool.submit(_run_chunk, chunk) for chunk in chunks}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                batch = future.result()
                results.extend(batch)
                errors += sum(r.error is not None for r in batch)
            if progress:
                progress(len(results), len(units), errors)
    except BaseException:
        _terminate(pool)
        raise
    pool.shutdown(wait=True)
    results.sort(key=lambda r: r.index)
    return results


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop every worker now (Ctrl-C, cancellation, a broken pool)."""
    processes = list(getattr(pool, "_processes", {}).values())  # no public API for this
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)
