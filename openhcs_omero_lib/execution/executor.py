"""Running a pipeline over every unit of a plate, in this process and worker processes.

With N workers this process is one of them: it computes from the start, and N - 1
processes are spawned once the work left looks longer than their start-up; they
join in when ready. Workers are started with the ``spawn`` method, which is safe
inside a process that already runs threads (an OMERO script holds Ice threads), or,
for a source that says it may be (local files) and while this process runs no other
thread, forked at once: a fork costs milliseconds where a new interpreter costs about
a second of imports. Each opens its own pixel source once from a
:class:`~.pixels.SourceSpec` and keeps it for every unit it is given. While a unit
computes, the next units' planes are fetched on background threads
(:class:`~.pixels.UnitPrefetcher`), so server round-trips overlap computing. Units
travel in chunks and only result rows come back, so memory is bounded by a few units
per process whatever the plate size. A failing unit becomes
an error row and the run goes on, unless the source says it cannot serve the plate
yet (:class:`~.pixels.SourceNotReady`), which stops the run; a worker that dies loses
no unit. Results come back in plate order, identical for any number of workers.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.util import Finalize
from typing import Callable, Sequence

from openhcs_omero_lib.execution.allocator import keep_freed_memory
from openhcs_omero_lib.pipeline.outlines import unit_outlines
from openhcs_omero_lib.pipeline.run import Reader, Unit, compile_unit
from openhcs_omero_lib.pipeline.spec import PipelineSpec
from openhcs_omero_lib.plates.layout import SiteUnit
from openhcs_omero_lib.plates.pixels import PixelSource, SourceNotReady, SourceSpec, UnitPrefetcher, open_source

ProgressCallback = Callable[[int, int, int], None]
"""``(units done, units in all, errors so far)``"""


@dataclass(frozen=True)
class UnitResult:
    index: int
    unit: SiteUnit
    measurements: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    outlines: dict | None = None
    """With ``outlines=True``: each measured labels image's :class:`~.pipeline.outlines.Outlines`
    by column prefix."""


def _run_one(compute: Unit, read: Reader, index: int, unit: SiteUnit, outlines: bool = False) -> UnitResult:
    start = time.perf_counter()
    try:
        if outlines:  # only outlines leave the process that computed them, never labels
            labels: dict = {}
            row = compute(read, labels)
            return UnitResult(index, unit, row, None, time.perf_counter() - start, unit_outlines(labels))
        row = compute(read)
        return UnitResult(index, unit, row, None, time.perf_counter() - start)
    except SourceNotReady:  # the plate's failure, not the unit's: the run stops
        raise
    except Exception as exc:  # a unit's failure is data, not the run's end
        # OMERO's exceptions carry the server's reason in .message; str() says only their type.
        reason = getattr(exc, "message", None) or str(exc)
        message = f"{type(exc).__name__}: {reason}".splitlines()[0]
        return UnitResult(index, unit, {}, message, time.perf_counter() - start)


# ---- worker side ------------------------------------------------------------------

_worker: dict[str, object] = {}


def _init_worker(source_spec: SourceSpec | PixelSource, pipeline: dict, outlines: bool = False,
                 parent: int | None = None, forked: bool = False) -> None:
    keep_freed_memory()
    # The parent decides about Ctrl-C; workers must not die half-way on their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if forked:  # the parent's SIGTERM handler came along; terminate() must end the worker
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # First, and by the parent's own word: it may be gone before this worker is ready.
    _watch_parent(parent or os.getppid())
    # A forked worker is handed the parent's own source (fork copies it, nothing is
    # pickled): no second scan of the plate before its first unit.
    source = source_spec if isinstance(source_spec, PixelSource) else open_source(source_spec)
    _worker["source"] = source
    spec = PipelineSpec.model_validate(pipeline)
    _worker["compute"] = compile_unit(spec)
    _worker["outlines"] = outlines
    # One reader for the worker's life: its threads and stores serve every chunk.
    _worker["prefetch"] = UnitPrefetcher(source, spec.channels_read())
    # Runs at the worker's normal exit (multiprocessing does not run atexit there).
    Finalize(None, _close_worker, exitpriority=10)
    if not forked:  # a forked worker already ends without tearing down (and without atexit)
        Finalize(None, _exit_now, exitpriority=0)


PARENT_WATCH_SECONDS = 0.5


def _watch_parent(parent: int) -> None:
    """End this worker soon after the process that started it is gone (killed with
    SIGKILL, say, or by the kernel for memory), which nothing else would tell it: a
    worker waiting for its next chunk holds both ends of the queue's pipe, so it never
    sees the parent's end close. Its stores are closed on the way out."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_SECONDS)
        closer = threading.Thread(target=_close_quietly, daemon=True)
        closer.start()
        closer.join(5)  # a server that does not answer must not keep the worker alive
        os._exit(1)

    threading.Thread(target=watch, name="openhcs-parent-watch", daemon=True).start()


def _close_quietly() -> None:
    with contextlib.suppress(BaseException):
        _close_worker()


def _run_chunk(chunk: list[tuple[int, SiteUnit]]) -> list[UnitResult]:
    prefetch: UnitPrefetcher = _worker["prefetch"]  # type: ignore[assignment]
    compute: Unit = _worker["compute"]  # type: ignore[assignment]
    try:
        readers = prefetch.readers([u for _, u in chunk])
        outlines = bool(_worker.get("outlines"))
        return [_run_one(compute, read, i, u, outlines) for (i, u), read in zip(chunk, readers)]
    except SourceNotReady:
        raise  # the parent stops the run and says why
    except BaseException:
        traceback.print_exc()
        raise


def _close_worker() -> None:
    prefetch = _worker.pop("prefetch", None)
    if prefetch is not None:
        prefetch.close()  # type: ignore[attr-defined]
    source = _worker.pop("source", None)
    if source is not None:
        source.close()  # type: ignore[attr-defined]


def _exit_now() -> None:
    """End the worker once its source is closed. Its last results are already with
    the parent; what is left is the interpreter tearing down numpy, scipy,
    scikit-image and omero, a few tenths of a second that the parent would wait for
    on every run. The atexit handlers (omero's temporary files) still run."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


# ---- parent side ------------------------------------------------------------------

def _largest_chunk(units: int, workers: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return chunk_size
    # Several chunks per worker balance the load; not so many that overhead shows.
    return max(1, min(16, units // (workers * 4) or 1))


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
              chunk_size: int | None = None, outlines: bool = False,
              notes: list[str] | None = None, meanwhile: Callable[[], None] | None = None) -> list[UnitResult]:
    """Run a bound pipeline over ``units`` (default: every unit of the plate).

    With ``workers == 1`` the work runs in this process on ``source``; otherwise
    this process and up to ``workers - 1`` spawned ones share it, each spawned
    process opening its own source from ``source.spec()``. Ctrl-C
    (KeyboardInterrupt) or SIGTERM (:class:`Cancelled`) stops the workers and is
    re-raised, as is :class:`~.pixels.SourceNotReady` from any unit. With ``outlines``
    each result also carries its objects' outlines. ``notes``, if given, receives a
    line for what the caller should hear of (a worker that died). ``meanwhile`` is
    this process's own preparation that no unit needs (checking the plate's files,
    importing what the results need): it runs while forked workers compute the first
    units, else before any unit; what it raises stops the run and is re-raised.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    keep_freed_memory()
    units = list(source.layout.units()) if units is None else list(units)
    if progress:
        progress(0, len(units), 0)
    if workers == 1 or len(units) <= 1:
        if meanwhile is not None:
            meanwhile()
        return _run_here(spec, source, units, progress, outlines)
    with _sigterm_cancels():
        return _run_in_workers(spec, source, units, workers, progress, chunk_size, outlines, notes, meanwhile)


def _run_here(spec, source, units, progress, outlines=False) -> list[UnitResult]:
    run = _SharedRun(units, 1, progress)
    run.outlines = outlines
    run.compute_here(spec, source)
    return run.results


PARENT_COMPUTES = True
"""With several workers, this process is one of them: it starts computing at once,
and the other processes start only if the work left looks longer than their start-up
(:data:`WORKER_START_SECONDS`); each joins in when it is ready."""

WORKER_START_SECONDS = 1.0
"""About what a worker needs before its first unit: a new interpreter importing
numpy, scipy, scikit-image and omero (most of it) and joining the session."""


PIXELS_WORTH_WORKERS = 200_000_000
"""A plate with more pixels than this to read starts its spawned workers with the run,
before its first field is timed: at 5 ns a pixel, about the cheapest a pipeline gets
(one pass over each plane), that is a second of work, as long as a worker's start.
Smaller plates are judged on their pace (:data:`WORKER_START_SECONDS`)."""


def _plainly_worth_workers(source: PixelSource, spec: PipelineSpec, units: int) -> bool:
    layout = source.layout
    height, width = layout.plane_shape
    pixels = units * len(spec.channels_read()) * layout.z_planes * height * width
    return pixels > PIXELS_WORTH_WORKERS


MEANWHILE_POLL_SECONDS = 0.005
"""How often this process looks for finished chunks while its own preparation runs
on a thread: two chunks wait with each worker, so a few milliseconds starve none."""

JUDGE_UNITS, JUDGE_SECONDS = 8, 0.25
"""The pace that decides on workers is taken over at least this many units after the
first, or this much time: on a machine that other work shares, single units of a few
milliseconds vary too much to extrapolate a plate from."""


def _ready() -> int:
    return os.getpid()


@contextlib.contextmanager
def _main_left_out():
    """Spawned workers without the program that started them: by default each new
    interpreter first runs the parent's main module again (an OMERO script imports
    omero.scripts and with it every omero.model class: half a second per worker),
    though a worker needs nothing from it (its initializer and tasks are this
    module's). multiprocessing decides from ``__main__``'s ``__file__`` and
    ``__spec__`` when it starts a process; they are put back at once."""
    main = sys.modules.get("__main__")
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if main and name in main.__dict__}
    try:
        for name in saved:
            if name == "__spec__":
                main.__spec__ = None  # type: ignore[union-attr]
            else:
                del main.__dict__[name]  # type: ignore[union-attr]
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


def _can_fork(source: PixelSource) -> bool:
    """Whether workers may be forked: the source's workers read only local files, and
    this process runs no other thread, since a fork copies only the calling thread and
    a lock another thread held would stay locked in the child."""
    return (getattr(source, "fork_safe", False) and threading.active_count() == 1
            and "fork" in get_all_start_methods())


class _SharedRun:
    """Units handed out from one queue to this process (one at a time, read ahead)
    and to worker processes (in chunks, once each has said it is ready)."""

    def __init__(self, units: Sequence[SiteUnit], chunk: int, progress: ProgressCallback | None,
                 helpers: int = 0, open_pool: Callable[[], ProcessPoolExecutor] | None = None):
        self.chunk, self.progress, self.total = chunk, progress, len(units)
        self.helpers, self._open_pool = helpers, open_pool
        self.pool: ProcessPoolExecutor | None = None
        self.todo = collections.deque(enumerate(units))
        self.results: list[UnitResult] = []
        self.errors = 0
        self.starting: set = set()
        self.running: dict = {}  # future -> its chunk, to take back if its worker dies
        self.ready = 0
        self.broken: str | None = None  # why the workers stopped, when they did
        self.outlines = False  # whether units send back their objects' outlines

    def start_helpers(self) -> None:
        self.pool = self._open_pool()  # type: ignore[misc]
        with _main_left_out():  # the processes start here, at the first submits
            self.starting = {self.pool.submit(_ready) for _ in range(self.helpers)}
        # A first chunk each, queued behind: a worker starts on it as soon as it is
        # ready, not when this process next looks up from a unit of its own.
        for _ in range(self.helpers):
            if not self.todo or not self._submit_next():
                break

    def _worth_helpers(self, done_here: int, seconds_here: float, margin: float = 1.0) -> bool:
        """Whether the work left, at this process's pace so far, outlasts ``margin``
        times a worker's start."""
        left = len(self.todo) * seconds_here / done_here
        return left > margin * WORKER_START_SECONDS

    def _next_chunk_size(self) -> int:
        """Chunks shrink as the work runs out, so that no one is left waiting at the
        end for a worker's last large chunk."""
        share = len(self.todo) // (4 * (self.helpers + 1))
        return max(1, min(self.chunk, share, len(self.todo)))

    def add(self, batch: list[UnitResult]) -> None:
        self.results.extend(batch)
        self.errors += sum(r.error is not None for r in batch)

    def collect(self, timeout: float | None) -> None:
        """Take in what workers have finished, and keep every ready worker busy."""
        out = self.starting | set(self.running)
        done = wait(out, timeout=timeout, return_when=FIRST_COMPLETED).done if out else set()
        before = len(self.results)
        for future in done:
            if future in self.starting:
                self.starting.discard(future)
                if self._result_or_none(future) is not None:
                    self.ready += 1
            else:
                chunk = self.running.pop(future)
                batch = self._result_or_none(future)
                if batch is None:
                    self.todo.extendleft(reversed(chunk))  # computed here instead
                else:
                    self.add(batch)
        # Two chunks per ready worker: one computing, one waiting, so none idles.
        while self.todo and self.broken is None and len(self.running) < 2 * self.ready:
            if not self._submit_next():
                break
        if len(self.results) > before:
            self._report()

    def _submit_next(self) -> bool:
        """Hand the next chunk of the queue to the workers; False (the chunk back in
        the queue) when the pool refuses it."""
        chunk = [self.todo.popleft() for _ in range(self._next_chunk_size())]
        try:
            future = self.pool.submit(_run_chunk, chunk)  # type: ignore[union-attr]
        except BrokenExecutor as exc:
            # A worker died after the last wait: the pool refuses new work before any
            # future of ours has said so.
            self.todo.extendleft(reversed(chunk))
            self._workers_failed(exc)
            return False
        self.running[future] = chunk
        return True

    def _result_or_none(self, future):
        """The future's result, or None if its worker process failed (it could not
        start, or died). Units are never lost to that: this process computes them,
        or, when it does not compute, the run fails with the reason."""
        try:
            return future.result()
        except SourceNotReady:
            raise
        except Exception as exc:
            self._workers_failed(exc)
            return None

    def _workers_failed(self, exc: Exception) -> None:
        """Stop handing work to workers; this process computes the rest (or, when it
        does not compute, the run fails with the reason)."""
        if not PARENT_COMPUTES:
            raise exc
        if self.broken is None:
            self.broken = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"openhcs-omero: a worker process failed ({self.broken}); "
                  "this process computes the rest", file=sys.stderr, flush=True)
        self.ready = 0

    def compute_here(self, spec: PipelineSpec, source: PixelSource) -> None:
        """Compute units from the front of the queue until it is empty, checking on
        the workers between units (and starting them once they look worth it)."""
        taken: collections.deque[tuple[int, SiteUnit]] = collections.deque()

        def take():
            while True:
                self.collect(timeout=0)
                if not self.todo:
                    return
                taken.append(self.todo.popleft())
                yield taken[-1][1]

        compute = compile_unit(spec)
        started = first_done = time.perf_counter()
        done_here = 0
        with UnitPrefetcher(source, spec.channels_read()) as prefetch:
            for read in prefetch.readers(take()):
                index, unit = taken.popleft()
                self.add([_run_one(compute, read, index, unit, self.outlines)])
                done_here += 1
                if self.helpers and self.pool is None:
                    now = time.perf_counter()
                    if done_here == 1:
                        # The first unit waits for its reads and warms caches: judged by
                        # itself, only a clear case starts workers.
                        first_done = now
                        worth = self._worth_helpers(1, now - started, margin=3.0)
                    elif done_here - 1 >= JUDGE_UNITS or now - first_done >= JUDGE_SECONDS:
                        worth = self._worth_helpers(done_here - 1, now - first_done)
                    else:  # too few units yet: one slow one (a busy machine) is not a pace
                        worth = False
                    if worth:
                        self.start_helpers()
                self._report()

    def meanwhile(self, work: Callable[[], None]) -> None:
        """Run ``work`` while the workers compute: on a thread, this one handing them
        chunks (it waits, so the two do not contend for the interpreter). Without
        workers yet, it simply runs. What ``work`` raises is raised here. Then the
        progress so far is reported (a caller may hold it back until ``work`` is done)."""
        if self.pool is None:
            work()
            self._report()
            return
        failed: list[BaseException] = []

        def target() -> None:
            try:
                work()
            except BaseException as exc:  # re-raised in the run's own thread
                failed.append(exc)

        thread = threading.Thread(target=target, name="openhcs-meanwhile", daemon=True)
        thread.start()
        while thread.is_alive():
            self.collect(timeout=0)
            thread.join(MEANWHILE_POLL_SECONDS)
        if failed:
            raise failed[0]
        self._report()

    def _report(self) -> None:
        """The progress so far, to the caller's callback."""
        if self.progress:
            self.progress(len(self.results), self.total, self.errors)

    def finish(self) -> None:
        """Wait for the chunks out with workers (and, with no one computing here, for
        workers to start and take the rest)."""
        while self.running or (self.todo and self.starting):
            self.collect(timeout=None)


def _run_in_workers(spec, source, units, workers, progress, chunk_size, outlines=False,
                    notes=None, meanwhile=None) -> list[UnitResult]:
    fork = _can_fork(source)

    def open_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=helpers, mp_context=get_context("fork" if fork else "spawn"),
                                   initializer=_init_worker,
                                   initargs=(source if fork else source.spec(), spec.model_dump(mode="json"),
                                             outlines, os.getpid(), fork))

    helpers = workers - 1 if PARENT_COMPUTES else workers
    run = _SharedRun(units, _largest_chunk(len(units), workers, chunk_size), progress, helpers, open_pool)
    run.outlines = outlines
    try:
        if fork or _plainly_worth_workers(source, spec, len(units)):
            # Forked: now, before reading ahead starts its threads; cheap enough to need
            # no judging whether the plate is worth it. Spawned: a plate this large is.
            run.start_helpers()
        if meanwhile is not None:
            run.meanwhile(meanwhile)
        if PARENT_COMPUTES:
            while True:
                run.compute_here(spec, source)
                run.finish()
                if not run.todo:  # else a worker died with units that are still to do
                    break
        else:
            if run.pool is None:
                run.start_helpers()
            run.finish()
    except SourceNotReady:
        if run.pool is not None:
            # Let the workers end as they normally do, closing their stores on the
            # server: the session goes on to the next plate.
            run.pool.shutdown(wait=True, cancel_futures=True)
        raise
    except BaseException:
        if run.pool is not None:
            _terminate(run.pool)
        raise
    if run.pool is None:
        pass  # the work was done here before workers looked worth starting
    elif run.broken is not None or (run.starting and not run.ready):
        # Broken, or the work ran out before any worker was ready (none has read a
        # pixel or opened a store, so none has anything to close).
        _terminate(run.pool)
    else:
        run.pool.shutdown(wait=True)
    if run.broken is not None and notes is not None:
        notes.append(f"a worker process failed ({run.broken}); this process computed its fields")
    run.results.sort(key=lambda r: r.index)
    return run.results


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop every worker now (Ctrl-C, cancellation, a broken pool)."""
    processes = list(getattr(pool, "_processes", {}).values())  # no public API for this
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)
