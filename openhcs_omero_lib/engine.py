"""One call from a pixel source and a pipeline spec to result tables."""

from __future__ import annotations

import time

from openhcs_omero_lib.execution.executor import ProgressCallback, run_units
from openhcs_omero_lib.pipeline.spec import PipelineSpec, bind_to_plate
from openhcs_omero_lib.plates.layout import PlateLayout
from openhcs_omero_lib.plates.pixels import PixelSource
from openhcs_omero_lib.results.tables import PlateResults, collect


def bind(spec: PipelineSpec, layout: PlateLayout) -> PipelineSpec:
    """The spec checked against the plate; ValueError names a missing channel."""
    return bind_to_plate(spec, len(layout.channels), [c.name for c in layout.channels])


def run_pipeline(source: PixelSource, spec: PipelineSpec, *, workers: int = 1,
                 progress: ProgressCallback | None = None, source_label: str = "",
                 outlines: bool = False) -> PlateResults:
    """Run ``spec`` on every unit of the plate behind ``source`` (keeping the measured
    objects' outlines when asked)."""
    bound = bind(spec, source.layout)
    started = time.time()
    results = run_units(bound, source, workers=workers, progress=progress, outlines=outlines)
    return collect(source.layout, bound, results, source=source_label or source.layout.name,
                   started=started, finished=time.time(), workers=workers)
