"""Running a pipeline from Python: one call for a local plate folder or an OMERO plate.

:func:`run_pipeline` takes a pipeline as a preset name, a spec file, a dict or a
:class:`~.pipeline.spec.PipelineSpec`, tunes it with keyword arguments (the
parameters it declares, :mod:`.pipeline.params`), runs it and returns a
:class:`RunResult` whose ``images`` and ``wells`` are the pandas DataFrames the
command line writes as CSVs. Everything is checked before a pixel is read.

This module imports nothing from ``omero``: an OMERO plate (a ``conn`` given) is run
by :mod:`.omero.python_api`, imported then.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

from openhcs_omero_lib.pipeline.loading import PipelineError, resolve_pipeline, spec_from_dict
from openhcs_omero_lib.pipeline.params import check_values, tune
from openhcs_omero_lib.pipeline.spec import PipelineSpec
from openhcs_omero_lib.results.run_result import RunResult

ProgressCallback = Callable[[int, int, int], None]
DEFAULT_ATTACH = ("plate", "wells")
DEFAULT_OUTPUTS = ("csv", "json", "table", "key_values")



def load_pipeline(pipeline: Any, **params: Any) -> PipelineSpec:
    """A preset name, a spec file (YAML or JSON), a dict or a PipelineSpec, with
    ``params`` set. A channel parameter given by name needs a plate: use
    :func:`run_pipeline`, which looks it up there. Raises :class:`PipelineError`."""
    if isinstance(pipeline, PipelineSpec):
        spec = pipeline
    elif isinstance(pipeline, dict):
        spec = spec_from_dict(pipeline)
    elif isinstance(pipeline, (str, os.PathLike)):
        spec = resolve_pipeline(os.fspath(pipeline))[0]
    else:
        raise PipelineError(f"a pipeline is a preset name, a spec file, a dict or a PipelineSpec, not "
                            f"{type(pipeline).__name__}")
    return tune(spec, params) if params else spec


def run_pipeline(plate: Any, pipeline: Any, *, conn: Any = None, workers: int | None = None,
                 attach: Iterable[str] | str | None = None, outputs: Iterable[str] | str | None = None,
                 replace: bool = True, runs: Iterable[int] | None = None, handler: Any = None,
                 out: str | os.PathLike | None = None, progress: ProgressCallback | None = None,
                 pixel_access: str = "auto", dask: str | None = None, **params: Any) -> RunResult:
    """Run ``pipeline`` on every field of ``plate`` and return the measurements.

    Without ``conn``, ``plate`` is a local ImageXpress folder. With ``conn`` (a
    BlitzGateway), it is an OMERO plate: an ID, ``"Plate:51"``, ``/omero/plate_51`` or
    a plate object; its results are attached as ``Run_HCS_Pipeline`` attaches them,
    ``attach`` (default plate and wells; ``()`` attaches nothing) and ``outputs``
    (default csv, json, table and key_values), replacing your earlier results of the
    pipeline unless ``replace=False``; ``runs`` measures only those acquisition runs
    and ``handler`` (an :class:`~.omero.metadata.OMEROMetadataHandler`) interprets
    the plate. ``workers`` defaults to the cores available (this process is one;
    call from under ``if __name__ == "__main__":`` in a script, as for any
    multiprocessing). ``out`` also writes ``images.csv``, ``wells.csv`` and
    ``results.json`` into that folder. ``params`` set the pipeline's parameters,
    e.g. ``nuclear_channel=2`` or ``nuclear_channel="DAPI"``, ``max_nucleus_size=400``.
    ``pixel_access`` (OMERO): ``auto`` reads the plate's files from the server's
    managed repository where they are on this machine and pass the checks,
    ``server`` always through RawPixelsStore; the results are the same.
    ``dask`` computes on a Dask cluster instead of worker processes: ``"local:N"``
    starts N workers on this machine for the run, an address (``"tls://host:8786"``)
    uses that scheduler, with the TLS files of the settings file (README: On a Dask
    cluster); without it, a settings file's ``dask`` section is used as the command
    line uses it, else ``workers`` processes.

    Bad input raises before any pixel is read: :class:`PipelineError` for the
    pipeline and its parameters, ValueError (an
    :class:`~.omero.plate.OmeroInputError` on OMERO) for the plate and choices.
    """
    from openhcs_omero_lib.execution.cores import available_cores

    spec = load_pipeline(pipeline)
    check_values(spec, params)
    if workers is None:
        workers = available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number of at least 1, not {workers!r}")
    if dask is not None and not isinstance(dask, str):
        raise ValueError(f"dask is a scheduler's address or local:N, not {type(dask).__name__}")
    if conn is None:
        for name, value in (("attach", attach), ("outputs", outputs), ("runs", runs), ("handler", handler)):
            if value is not None:
                raise ValueError(f"{name} is for OMERO plates (give conn=); a local folder's results are "
                                 "returned, and written with out=")
    else:  # checked before a cluster is started for nothing
        attach, outputs = _choices(attach, DEFAULT_ATTACH, "attach"), _choices(outputs, DEFAULT_OUTPUTS, "outputs")
    from openhcs_omero_lib.execution.backend import open_backend

    # A Dask cluster started for the call is stopped when it ends.
    with open_backend(workers, dask) as backend:
        if conn is None:
            result = _run_folder(plate, spec, params, backend, progress)
        else:
            from openhcs_omero_lib.omero.python_api import run_plate

            result = run_plate(conn, plate, spec, params, backend=backend, attach=attach, outputs=outputs,
                               replace=replace, runs=list(runs) if runs is not None else None, handler=handler,
                               progress=progress, pixel_access=pixel_access)
    if out is not None:
        from openhcs_omero_lib.results.sinks import LocalFolderSink
        from openhcs_omero_lib.results.tables import PlateResults

        result.files = LocalFolderSink(out).write(PlateResults(result.images, result.wells, result.summary))
    return result


def _run_folder(folder: Any, spec: PipelineSpec, params: dict[str, Any], backend: Any,
                progress: ProgressCallback | None) -> RunResult:
    from openhcs_omero_lib.engine import run_pipeline as run_source
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    if not isinstance(folder, (str, os.PathLike)):
        raise ValueError(f"without conn=, the plate is a local folder, not {type(folder).__name__} "
                         "(for an OMERO plate, pass conn=)")
    with ImageXpressSource(os.fspath(folder)) as source:
        tuned = tune(spec, params, [c.name for c in source.layout.channels])
        results = run_source(source, tuned, backend=backend, progress=progress, source_label=str(Path(folder)))
    return RunResult(results.images, results.wells, results.summary)


def _choices(value: Iterable[str] | str | None, default: tuple[str, ...], what: str) -> tuple[str, ...]:
    if value is None:
        return default
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    chosen = tuple(v.strip() for v in value)
    known = DEFAULT_OUTPUTS if what == "outputs" else ("plate", "wells", "images")
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)}; choose from {', '.join(known)}")
    return chosen


__all__ = ["RunResult", "load_pipeline", "run_pipeline"]
