"""Computing a run's units on a Dask cluster (dask.distributed, dask-jobqueue).

The cluster is a scheduler at an address, ``local:N`` (a LocalCluster of N worker
processes on this machine) or a SLURM cluster started for the run (dask-jobqueue); the
choice is the server's (:mod:`.settings`), never the user's. For each run the pixel
source's :class:`~.pixels.SourceSpec` (for OMERO: the server's address and the job's
session key) goes to the cluster once, as a worker plugin; each worker opens its source
from it on its first chunk (joining the session by key, or opening the plate's files)
and keeps it, with its reading lanes, for the rest of the run; the plugin is removed
when the run ends, which closes those sources. Tasks carry only chunks of units and
return only result rows, in plate order once sorted, the same rows as the worker
processes compute (:mod:`.executor`).

Faults: a unit that raises is an error row. A worker that dies while holding a chunk
has it retried on another worker once (the scheduler's ``allowed-failures``, set to 1
on the clusters this module starts); a chunk that loses a second worker becomes error
rows and the run finishes. Ctrl-C or SIGTERM cancels the outstanding chunks, closes the
workers' sources, and the caller's ``close`` stops a cluster this module started.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import queue
import signal
import socket
import threading
import time
import uuid
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import dask
from distributed import Client, LocalCluster, get_worker
from distributed.comm.addressing import parse_address
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.scheduler import KilledWorker
from distributed.security import Security

from openhcs_omero_lib.execution.allocator import keep_freed_memory
from openhcs_omero_lib.execution.executor import ProgressCallback, UnitResult, _run_one, _sigterm_cancels
from openhcs_omero_lib.execution.settings import ClusterError, DaskSettings, SettingsError, local_workers
from openhcs_omero_lib.pipeline.run import Unit, compile_unit
from openhcs_omero_lib.pipeline.spec import PipelineSpec
from openhcs_omero_lib.plates.layout import SiteUnit
from openhcs_omero_lib.plates.pixels import PixelSource, SourceNotReady, SourceSpec, UnitPrefetcher, open_source

ALLOWED_FAILURES = 1
"""Workers a chunk may lose before its units become error rows: one retry elsewhere."""

MAX_CHUNK = 16
"""Units per task, at most. A task costs the scheduler about a millisecond; sixteen
units of tens of milliseconds each keep that under 1% of the compute."""

CHUNKS_PER_THREAD = 2
"""Chunks out per worker thread: one computing, one waiting, so none idles."""

POLL_SECONDS = 1.0

KILLED = "KilledWorker: the Dask workers computing this field died twice (out of memory?)"

_SIGINT_PLUGIN = "openhcs-omero-ignore-sigint"

LOCAL_CONFIG = {
    "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
    # The statistical profiler samples every worker thread's stack every 10 ms, which
    # costs the computing thread the GIL: a few percent of a field.
    "distributed.worker.profile.enabled": False,
    # The nanny starts workers with glibc told to hand freed memory back at once: every
    # field's arrays would then come back from the kernel as fresh pages, a large part
    # of a small field's time. Workers keep glibc's own thresholds, as worker processes do.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


# ---- worker side ------------------------------------------------------------------

class _RunPlugin(WorkerPlugin):
    """One run's source and pipeline on a worker: opened on the worker's first chunk,
    kept for its others, closed when the run ends (the plugin is removed) or the
    worker closes."""

    idempotent = False

    def __init__(self, source: SourceSpec, pipeline: dict, outlines: bool):
        self.source, self.pipeline, self.outlines = source, pipeline, outlines
        self._lock = threading.Lock()
        self._opened: tuple[PixelSource, Unit, UnitPrefetcher] | None = None
        self._closed = False

    def __getstate__(self) -> dict:
        return {"source": self.source, "pipeline": self.pipeline, "outlines": self.outlines}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["source"], state["pipeline"], state["outlines"])

    def __repr__(self) -> str:  # never the source's parameters (its secret is out of them anyway)
        return f"<openhcs-omero run: {self.source.kind} source>"

    def compute(self, chunk: list[tuple[int, SiteUnit]]) -> list[UnitResult]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the run is over on this worker")
            if self._opened is None:
                # A worker started some other way than by our cluster (a scheduler
                # the user runs) may still have the nanny's trimming: undone here too.
                keep_freed_memory()
                source = open_source(self.source)
                spec = PipelineSpec.model_validate(self.pipeline)
                self._opened = (source, compile_unit(spec), UnitPrefetcher(source, spec.channels_read()))
        _, compute, prefetch = self._opened
        readers = prefetch.readers([unit for _, unit in chunk])
        return [_run_one(compute, read, index, unit, self.outlines) for (index, unit), read in zip(chunk, readers)]

    def teardown(self, worker: Any) -> None:
        with self._lock:
            self._closed = True
            opened, self._opened = self._opened, None
        if opened is not None:
            source, _, prefetch = opened
            prefetch.close()  # waits for a read in flight: no store is opened after this
            source.close()


def _compute_chunk(plugin_name: str, chunk: list[tuple[int, SiteUnit]]) -> list[UnitResult]:
    return get_worker().plugins[plugin_name].compute(chunk)


class _IgnoreInterrupt(WorkerPlugin):
    """Workers of a local cluster share the terminal's process group: Ctrl-C is for
    the run (which stops them), not for each of them to die on."""

    idempotent = True

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---- client side ------------------------------------------------------------------

def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_encryption(settings: DaskSettings) -> None:
    """A cluster on another machine receives the session key: only over TLS, unless
    the administrator said otherwise (``allow_unencrypted``)."""
    if settings.allow_unencrypted:
        return
    where = settings.origin or "settings"
    if settings.slurm is not None:
        if settings.tls is None and not settings.slurm.get("security"):
            raise SettingsError(f"{where}: SLURM workers run on other machines; give the tls section (or "
                                "slurm.security) so that what they receive is encrypted, or allow_unencrypted: true")
        return
    address = settings.scheduler or ""
    if local_workers(address) is not None:
        return
    scheme, location = parse_address(address)
    if scheme in ("tls", "inproc") or _is_loopback(urlsplit(f"//{location}").hostname or ""):
        return
    raise SettingsError(f"{where}: the scheduler {address} is on another machine and {scheme}:// is not "
                        "encrypted; use a tls:// address with the tls section (see the README), or "
                        "allow_unencrypted: true")


def _security(settings: DaskSettings) -> Security | None:
    tls = settings.tls
    if tls is None:
        return None
    # One certificate for every role, as Security.temporary() makes them.
    return Security(tls_ca_file=tls.ca_file, tls_client_cert=tls.cert, tls_client_key=tls.key,
                    tls_scheduler_cert=tls.cert, tls_scheduler_key=tls.key,
                    tls_worker_cert=tls.cert, tls_worker_key=tls.key, require_encryption=True)


def slurm_cluster(settings: DaskSettings):
    """A dask-jobqueue SLURMCluster from ``settings.slurm`` (its ``jobs`` aside), not yet
    scaled: no job is submitted until :meth:`DaskBackend.open` asks for them."""
    from dask_jobqueue import SLURMCluster

    options = {k: v for k, v in (settings.slurm or {}).items() if k != "jobs"}
    security = _security(settings)
    if security is not None:
        options.setdefault("security", security)
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        try:
            return SLURMCluster(**options)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{settings.origin or 'settings'}: slurm: {exc}") from None


class DaskBackend:
    """Runs units on a Dask cluster; see the module's docstring. Open with
    :meth:`open`; :meth:`close` stops a cluster it started (a scheduler at an address
    is left running)."""

    kind = "dask"

    def __init__(self, client: Client, settings: DaskSettings, cluster: Any = None):
        self.client, self.settings, self.cluster = client, settings, cluster
        self._threads, self._threads_at = 0, 0.0

    @classmethod
    def open(cls, settings: DaskSettings) -> DaskBackend:
        check_encryption(settings)
        # distributed logs every client, plugin and cancelled key at INFO; warnings
        # (a worker that died and was restarted) are what a run's stderr should show.
        chatty = logging.getLogger("distributed")
        if chatty.getEffectiveLevel() < logging.WARNING:
            chatty.setLevel(logging.WARNING)
        where = settings.origin or "settings"
        n_local = local_workers(settings.scheduler) if settings.scheduler else None
        try:
            with _sigterm_cancels():  # SIGTERM while a cluster starts must not orphan its workers
                return cls._connect(settings, n_local)
        except (SettingsError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise ClusterError(f"cannot reach the Dask cluster ({where}): {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())}") from None

    @classmethod
    def _connect(cls, settings: DaskSettings, n_local: int | None) -> DaskBackend:
        cluster = None
        try:
            if n_local is not None:
                with dask.config.set(LOCAL_CONFIG):
                    # The scheduler's HTTP server always starts; ":0" gives it a free
                    # port (on loopback, as the scheduler) instead of claiming 8787.
                    cluster = LocalCluster(n_workers=n_local, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=logging.ERROR)
                client = Client(cluster, set_as_default=False)
                client.register_plugin(_IgnoreInterrupt(), name=_SIGINT_PLUGIN)
            elif settings.slurm is not None:
                cluster = slurm_cluster(settings)
                cluster.scale(jobs=int(settings.slurm.get("jobs", 1)))
                client = Client(cluster, set_as_default=False)
            else:
                client = Client(settings.scheduler, security=_security(settings), set_as_default=False,
                                timeout=min(settings.start_timeout, 30))
        except BaseException:
            if cluster is not None:
                cluster.close()  # its workers, or its batch jobs
            raise
        return cls(client, settings, cluster)

    @property
    def workers(self) -> int:
        return len(self.client.nthreads())

    def describe(self) -> str:
        n = self.workers
        where = "a local Dask cluster" if self.cluster is not None and self.settings.slurm is None else \
            "a SLURM Dask cluster" if self.settings.slurm is not None else "a Dask cluster"
        return f"{where} of {n} worker{'s' if n != 1 else ''}"

    def _thread_count(self, fresh: bool = False) -> int:
        """Threads of the cluster's workers, asked at most once a second."""
        now = time.monotonic()
        if fresh or now - self._threads_at > POLL_SECONDS:
            self._threads = sum(self.client.nthreads().values())
            self._threads_at = now
        return self._threads

    def _wait_for_threads(self) -> int:
        """Threads to compute with, once there is a worker (a batch queue may take a while)."""
        threads = self._thread_count()
        if threads:
            return threads
        try:
            self.client.wait_for_workers(1, timeout=self.settings.start_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise ClusterError(f"no Dask worker joined within {self.settings.start_timeout:g} s") from None
        return self._thread_count(fresh=True)

    def _chunk_size(self, left: int, threads: int) -> int:
        """Chunks shrink as the work runs out, so that no worker is left with a long
        last chunk while the others wait."""
        largest = self.settings.chunk_size or MAX_CHUNK
        return max(1, min(largest, left // (4 * threads), left))

    def run_units(self, spec: PipelineSpec, source: PixelSource, units: Sequence[SiteUnit] | None = None,
                  progress: ProgressCallback | None = None, outlines: bool = False,
                  notes: list[str] | None = None, meanwhile: Callable[[], None] | None = None) -> list[UnitResult]:
        units = list(source.layout.units()) if units is None else list(units)
        if meanwhile is not None:  # the cluster's workers are remote: nothing to overlap here
            meanwhile()
        if progress:
            progress(0, len(units), 0)
        if not units:
            return []
        name = f"openhcs-omero-run-{uuid.uuid4().hex}"
        with _sigterm_cancels():
            self._wait_for_threads()
            self.client.register_plugin(_RunPlugin(source.spec(), spec.model_dump(mode="json"), outlines),
                                        name=name)
            try:
                results = self._run(name, units, progress)
            finally:
                # Closes every worker's source (its stores on the server) before the
                # caller goes on; the key leaves the scheduler with the plugin.
                try:
                    self.client.unregister_worker_plugin(name)
                except Exception:  # a cluster that is gone has nothing left open
                    pass
        lost = sum(r.error == KILLED for r in results)
        if lost and notes is not None:
            notes.append(f"{lost} field(s) lost two Dask workers each (out of memory?) and were not measured")
        return results

    def _run(self, name: str, units: list[SiteUnit], progress: ProgressCallback | None) -> list[UnitResult]:
        todo = collections.deque(enumerate(units))
        pending: dict = {}
        finished: queue.SimpleQueue = queue.SimpleQueue()  # futures, as each is done
        results: list[UnitResult] = []
        errors, sent, idle_since = 0, 0, None
        try:
            while todo or pending:
                threads = self._thread_count()
                if not threads:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > self.settings.start_timeout:
                        raise ClusterError(f"the Dask cluster has had no worker for "
                                           f"{self.settings.start_timeout:g} s")
                else:
                    idle_since = None
                while todo and len(pending) < CHUNKS_PER_THREAD * max(threads, 1):
                    chunk = [todo.popleft() for _ in range(self._chunk_size(len(todo), max(threads, 1)))]
                    future = self.client.submit(_compute_chunk, name, chunk, key=f"{name}-{sent}")
                    pending[future] = chunk
                    future.add_done_callback(finished.put)
                    sent += 1
                try:
                    future = finished.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                batch = self._outcome(future, pending.pop(future))
                results.extend(batch)
                errors += sum(r.error is not None for r in batch)
                if progress:
                    progress(len(results), len(units), errors)
        except BaseException:
            self.client.cancel(list(pending))
            raise
        results.sort(key=lambda r: r.index)
        return results

    def _outcome(self, future, chunk: list[tuple[int, SiteUnit]]) -> list[UnitResult]:
        if future.status == "finished":
            return future.result()
        if future.status == "cancelled":  # not by this run: the scheduler lost this client
            raise ClusterError("the Dask scheduler dropped the run's work (restarted, or the connection was lost)")
        exc = future.exception()
        if isinstance(exc, KilledWorker):
            return [UnitResult(index, unit, {}, KILLED) for index, unit in chunk]
        if isinstance(exc, SourceNotReady):
            raise exc
        # Not a unit's failure (those are rows): the worker could not open the plate.
        raise ClusterError(f"a Dask worker failed: {type(exc).__name__}: {' '.join(str(exc).split())}") from None

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> DaskBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DaskBackend", "check_encryption", "slurm_cluster"]
