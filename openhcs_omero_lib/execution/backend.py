"""Where a run's units are computed: one interface, two executors.

:class:`ProcessPool` is the default: this process and worker processes of this machine
(:mod:`.executor`). :class:`~.dask_backend.DaskBackend` sends the units to a Dask
cluster. Both take a bound pipeline, a pixel source and the units, call ``progress``
as units finish, and return every unit's :class:`~.executor.UnitResult` in plate order
(a failing unit is an error row, not the run's end); Ctrl-C or SIGTERM
(:class:`~.executor.Cancelled`) stops the work and is re-raised.

Which one runs is configuration (:mod:`.settings`): ``--dask`` on the command line,
otherwise the server's settings file, otherwise the worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from openhcs_omero_lib.execution.executor import ProgressCallback, UnitResult, run_units
from openhcs_omero_lib.execution.settings import ClusterError, DaskSettings, ServerSettings, dask_option, load_settings
from openhcs_omero_lib.pipeline.spec import PipelineSpec
from openhcs_omero_lib.plates.layout import SiteUnit
from openhcs_omero_lib.plates.pixels import PixelSource


class ExecutorBackend(Protocol):
    kind: str
    """``processes`` or ``dask``"""

    @property
    def workers(self) -> int:
        """How many compute (for the summary and messages)."""

    def run_units(self, spec: PipelineSpec, source: PixelSource, units: Sequence[SiteUnit] | None = None,
                  progress: ProgressCallback | None = None, outlines: bool = False,
                  notes: list[str] | None = None, meanwhile: Callable[[], None] | None = None) -> list[UnitResult]:
        """Every unit's result (default: every unit of the plate), in plate order;
        ``notes`` receives a line for what the caller should hear of (workers lost).
        ``meanwhile`` is the caller's preparation that no unit needs, run while the
        first units compute where the backend can (else first); what it raises stops
        the run and is re-raised."""

    def describe(self) -> str:
        """Who computes, for messages: ``2 workers``, ``a Dask cluster of 8 workers``."""

    def close(self) -> None:
        """Release what the backend holds (a cluster it started); safe to call twice."""

    def __enter__(self) -> ExecutorBackend: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass
class ProcessPool:
    """This process and up to ``workers - 1`` spawned ones (:func:`.executor.run_units`)."""

    workers: int = 1
    kind: str = "processes"

    def run_units(self, spec: PipelineSpec, source: PixelSource, units: Sequence[SiteUnit] | None = None,
                  progress: ProgressCallback | None = None, outlines: bool = False,
                  notes: list[str] | None = None, meanwhile: Callable[[], None] | None = None) -> list[UnitResult]:
        return run_units(spec, source, units, workers=self.workers, progress=progress, outlines=outlines,
                         notes=notes, meanwhile=meanwhile)

    def describe(self) -> str:
        return f"{self.workers} worker{'s' if self.workers != 1 else ''}"

    def close(self) -> None:
        pass

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_backend(workers: int, dask: DaskSettings | str | None = None,
                 settings: ServerSettings | None = None) -> ExecutorBackend:
    """The backend configuration asks for: ``dask`` (settings, or a ``--dask`` value),
    else the settings file's ``dask`` section, else :class:`ProcessPool` of
    ``workers``. A Dask backend is connected (its cluster started) when this returns;
    close it (or use it as a context manager) when the run is over.
    Raises :class:`~.settings.SettingsError` or :class:`ClusterError`."""
    if isinstance(dask, str):
        dask = dask_option(dask, settings if settings is not None else load_settings())
    elif dask is None:
        dask = (settings if settings is not None else load_settings()).dask
    if dask is None:
        return ProcessPool(workers)
    from openhcs_omero_lib.execution.dask_backend import DaskBackend

    return DaskBackend.open(dask)


__all__ = ["ClusterError", "ExecutorBackend", "ProcessPool", "open_backend"]
