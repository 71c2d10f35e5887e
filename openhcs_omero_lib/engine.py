"""One call from a pixel source and a pipeline spec to result tables."""

from __future__ import annotations

import importlib
import time
from typing import TYPE_CHECKING, Callable

from openhcs_omero_lib.execution.backend import ExecutorBackend, ProcessPool
from openhcs_omero_lib.execution.executor import ProgressCallback
from openhcs_omero_lib.pipeline.spec import PipelineSpec, bind_to_plate
from openhcs_omero_lib.plates.layout import PlateLayout
from openhcs_omero_lib.plates.pixels import PixelSource

if TYPE_CHECKING:  # imported while the first units compute: pandas is a tenth of a second
    from openhcs_omero_lib.results.tables import PlateResults

RESULTS_MODULE = "openhcs_omero_lib.results.tables"


def bind(spec: PipelineSpec, layout: PlateLayout) -> PipelineSpec:
    """The spec checked against the plate; ValueError names a missing channel."""
    return bind_to_plate(spec, len(layout.channels), [c.name for c in layout.channels])


def run_pipeline(source: PixelSource, spec: PipelineSpec, *, workers: int = 1,
                 progress: ProgressCallback | None = None, source_label: str = "",
                 outlines: bool = False, backend: ExecutorBackend | None = None,
                 meanwhile: Callable[[], None] | None = None) -> PlateResults:
    """Run ``spec`` on every unit of the plate behind ``source`` (keeping the measured
    objects' outlines when asked), on ``backend`` (default: ``workers`` processes).
    ``meanwhile`` is the caller's preparation that no unit needs (a check of the
    plate's files, say): it runs while the first units compute, and what it raises
    stops the run and is raised here; ``progress`` hears of the run once it is done."""
    bound = bind(spec, source.layout)
    backend = backend or ProcessPool(workers)
    started = time.time()
    notes: list[str] = []
    prepared = reported = False

    def prepare() -> None:
        nonlocal prepared
        if meanwhile is not None:
            meanwhile()
        importlib.import_module(RESULTS_MODULE)
        prepared = True

    def report(done: int, total: int, errors: int) -> None:
        nonlocal reported
        if not prepared:  # a run that the preparation stops shows no progress first
            return
        if not reported and done:
            progress(0, total, 0)  # type: ignore[misc]
        reported = True
        progress(done, total, errors)  # type: ignore[misc]

    results = backend.run_units(bound, source, progress=report if progress else None, outlines=outlines,
                                notes=notes, meanwhile=prepare)
    from openhcs_omero_lib.results.tables import collect

    collected = collect(source.layout, bound, results, source=source_label or source.layout.name,
                        started=started, finished=time.time(), workers=backend.workers, executor=backend.kind)
    if notes:
        collected.summary["notes"] = notes
    return collected
