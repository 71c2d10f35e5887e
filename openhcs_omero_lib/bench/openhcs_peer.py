"""The same pipeline run by OpenHCS on the same plate folder (runs inside OpenHCS's Python).

OpenHCS (the ``openhcs`` package) runs function steps over a plate with its own
orchestrator: it reads the ImageXpress folder, groups each site's channels into one
``(channel, y, x)`` stack (``variable_components=[CHANNEL]``) and calls the step in its
worker processes, one well at a time per worker, then writes the measurements as
CSV files. The step below computes with this package's
:func:`~openhcs_omero_lib.pipeline.run.run_unit`, so the work per site is identical to
openhcs-omero's; what differs is everything around it.

The benchmark starts this in OpenHCS's interpreter with this package on the path:

    python -c "from openhcs_omero_lib.bench.openhcs_peer import main; main()" < request.json

The request (JSON on stdin) names the plate folder, the workers and the pipeline; one
JSON line with the timing and the measured total comes back on stdout.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from openhcs.core.artifacts import (
    ArtifactMeasurementSubjectRelation,
    ArtifactSpec,
    MeasurementsArtifactType,
)
from openhcs.core.measurement_row_materialization import (
    DataclassMeasurementColumnarRows,
)
from openhcs.core.memory import numpy as numpy_function
from openhcs.core.pipeline.function_contracts import artifact_outputs
from openhcs.processing.materialization import csv_only


@dataclass(frozen=True)
class Measurement:
    """One measurement of one site, in long form (the columns depend on the pipeline)."""

    slice_index: int
    measurement: str
    value: float


_BOUND: dict[tuple[str, int], object] = {}


def _bound(pipeline: str, channels: int):
    key = (pipeline, channels)
    if key not in _BOUND:
        from openhcs_omero_lib.pipeline.loading import resolve_pipeline
        from openhcs_omero_lib.pipeline.spec import bind_to_plate

        _BOUND[key] = bind_to_plate(resolve_pipeline(pipeline)[0], channels)
    return _BOUND[key]


@numpy_function
@artifact_outputs(ArtifactSpec("measurements", MeasurementsArtifactType, materialization=csv_only(),
                               relations=(ArtifactMeasurementSubjectRelation(),)))
def measure_site(image, pipeline: str = "nuclei_count"):
    """One site: ``image`` holds its channels, in order."""
    from openhcs_omero_lib.pipeline.run import run_unit

    row = run_unit(_bound(pipeline, image.shape[0]), lambda c: image[c - 1][np.newaxis])
    rows = [Measurement(0, name, float(value)) for name, value in row.items()]
    return image, DataclassMeasurementColumnarRows(rows, row_type=Measurement)


def _drain(queue) -> None:
    # OpenHCS requires a progress queue; nothing reads it here, so empty it lest
    # its workers block on a full pipe.
    while queue.get() is not None:
        pass


def run(folder: Path, workers: int, pipeline: str) -> dict[str, object]:
    from objectstate.lazy_factory import ensure_global_config_context
    from openhcs.constants import MULTIPROCESSING_AXIS
    from openhcs.constants.constants import VariableComponents
    from openhcs.core.config import (
        GlobalPipelineConfig,
        LazyProcessingConfig,
        PipelineConfig,
    )
    from openhcs.core.orchestrator.orchestrator import PipelineOrchestrator
    from openhcs.core.progress import set_progress_queue
    from openhcs.core.steps.function_step import FunctionStep

    from openhcs_omero_lib.bench.memory import PeakMemory

    queue = multiprocessing.get_context("spawn").Queue()
    drain = threading.Thread(target=_drain, args=(queue,), daemon=True)
    drain.start()
    set_progress_queue(queue)
    try:
        with PeakMemory() as memory:
            start = time.perf_counter()
            ensure_global_config_context(GlobalPipelineConfig, GlobalPipelineConfig(num_workers=workers))
            orchestrator = PipelineOrchestrator(folder, pipeline_config=PipelineConfig())
            orchestrator.initialize()
            wells = orchestrator.get_component_keys(MULTIPROCESSING_AXIS)
            steps = [FunctionStep(func=(measure_site, {"pipeline": pipeline}), name="measure",
                                  processing_config=LazyProcessingConfig(
                                      variable_components=[VariableComponents.CHANNEL]))]
            bundle = orchestrator.compile_pipelines(pipeline_definition=steps, well_filter=wells)
            results = orchestrator.execute_compiled_plate(
                execution_bundle=bundle, max_workers=workers, progress_queue=queue,
                progress_context={"execution_id": f"bench::{os.getpid()}",
                                  "plate_id": str(orchestrator.plate_path), "axis_id": ""})
            seconds = time.perf_counter() - start
    finally:
        set_progress_queue(None)
        queue.put(None)
        drain.join(timeout=10)
    failed = sorted(w for w, r in results.items() if not r.is_success())
    units, total = _read_measurements(folder)
    return {"seconds": seconds, "units": units, "errors": len(failed), "count_total": total,
            "wells_failed": failed, **memory.report()}


def _read_measurements(folder: Path) -> tuple[int, float]:
    """Sites measured and the sum of every ``*_count`` measurement, from the CSV
    files OpenHCS wrote beside the plate (``<plate>_openhcs/results``)."""
    units, total = 0, 0.0
    for path in folder.parent.glob(f"{folder.name}_openhcs/results/*_measurements_*.csv"):
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        units += 1
        total += sum(float(r["value"]) for r in rows if r["measurement"].endswith("_count"))
    return units, total


def main() -> None:
    request = json.loads(sys.stdin.read())
    result = run(Path(request["folder"]), int(request["workers"]), request["pipeline"])
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
