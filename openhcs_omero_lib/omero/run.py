"""Running a pipeline on OMERO plates: check everything, compute, then attach."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from openhcs_omero_lib.engine import bind
from openhcs_omero_lib.execution.backend import ExecutorBackend, ProcessPool
from openhcs_omero_lib.execution.executor import ProgressCallback
from openhcs_omero_lib.omero import rois as R
from openhcs_omero_lib.omero.annotations import read_file_annotation
from openhcs_omero_lib.omero.connection import session_key
from openhcs_omero_lib.omero.direct_pixels import ChecksAhead, PixelAccess, access_after_run, open_pixels
from openhcs_omero_lib.omero.metadata import OMEROMetadataHandler
from openhcs_omero_lib.omero.plate import OmeroInputError, OmeroPlate, load_plate, plate_ids_for
from openhcs_omero_lib.omero.preflight import check_alike, check_can_annotate, check_ready, check_tables
from openhcs_omero_lib.omero.sink import OmeroResultSink, WriteReport
from openhcs_omero_lib.pipeline.loading import parse_spec, resolve_pipeline
from openhcs_omero_lib.pipeline.params import tune
from openhcs_omero_lib.pipeline.spec import PipelineSpec
from openhcs_omero_lib.redact import add_secret
from openhcs_omero_lib.results.tables import PlateResults, collect


@dataclass
class PlateRun:
    plate: OmeroPlate
    results: PlateResults
    report: WriteReport = field(default_factory=WriteReport)
    access: PixelAccess = field(default_factory=lambda: PixelAccess("server"))
    """How its pixels were read (the managed repository's files or RawPixelsStore), and why"""


def pipeline_from_choice(conn, preset: str | None, annotation_id: int | None) -> PipelineSpec:
    """A preset by name, or the spec in a FileAnnotation (which wins when given)."""
    if annotation_id:
        try:
            name, data = read_file_annotation(conn, annotation_id)
        except (LookupError, ValueError) as exc:
            raise OmeroInputError(str(exc)) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise OmeroInputError(f"file annotation {annotation_id} ({name}) is not a text file") from None
        return parse_spec(text, f"annotation {annotation_id} ({name})")
    if not preset:
        raise OmeroInputError("choose a pipeline preset or give a pipeline file annotation ID")
    return resolve_pipeline(preset)[0]


def prepare(conn, data_type: str, ids: list[int], spec: PipelineSpec,
            handler: OMEROMetadataHandler | None = None,
            runs: list[int] | None = None,
            outputs: tuple[str, ...] = (),
            params: Mapping[str, Any] | None = None,
            annotate: bool = True, pixel_access: str = "server") -> list[tuple[OmeroPlate, PipelineSpec]]:
    """Every plate's layout and the spec bound to it, before anything runs: a bad ID,
    a channel a plate lacks, a plate the user may not annotate, a plate whose images
    are not alike, a table among the ``outputs`` without OMERO.tables, or images the
    server is still preparing (:class:`~.preflight.PlateNotReady`) stop the whole
    request with nothing computed and nothing written.

    ``runs`` (PlateAcquisition IDs) measures only those runs: a plate with none of
    them is left out, and a run on none of the plates is an error. Without it every
    run of every plate is measured, each on its own.

    ``params`` tunes the spec (its declared parameters, :mod:`..pipeline.params`) for
    each plate; a channel given by name is looked up among that plate's channels.
    ``annotate=False`` (a run that attaches nothing) skips the check that the user
    may annotate the plates. ``pixel_access`` is the run's (``auto``: the managed
    repository is looked up meanwhile, and the first plate's files are checked once it
    is loaded, for :func:`run_on_plate`: :class:`~.direct_pixels.ChecksAhead`)."""
    add_secret(session_key(conn))  # masked in this process's log lines from now on
    with ChecksAhead(conn, pixel_access) as ahead:
        if "table" in outputs:
            check_tables(conn)
        chosen = frozenset(runs) if runs else None
        prepared, found = [], set()
        for pid in plate_ids_for(conn, data_type, ids):
            plate = load_plate(conn, pid, handler, runs=chosen)
            if chosen is not None:
                found |= chosen & {r.id for r in plate.all_runs}
                if plate.layout.n_units == 0:
                    continue
            try:
                tuned = tune(spec, params or {}, [c.name for c in plate.layout.channels])
                bound = bind(tuned, plate.layout)
            except ValueError as exc:
                raise OmeroInputError(f"plate {pid} ({plate.layout.name}): {exc}") from None
            ahead.start(plate)
            if annotate:
                check_can_annotate(conn, plate)
            prepared.append((plate, bound))
        if chosen is not None and chosen - found:
            missing = ", ".join(str(r) for r in sorted(chosen - found))
            raise OmeroInputError(f"no chosen plate has the run(s) {missing} (Runs takes the IDs of a plate's "
                                  "acquisition runs, its PlateAcquisitions)")
        check_alike(conn, [plate for plate, _ in prepared])
        check_ready(conn, [plate for plate, _ in prepared])
    return prepared


def run_on_plate(conn, plate: OmeroPlate, bound: PipelineSpec, *, workers: int = 1,
                 attach_to: tuple[str, ...] = ("plate", "wells"),
                 outputs: tuple[str, ...] = ("csv", "json", "table", "key_values"),
                 replace: bool = True, progress: ProgressCallback | None = None,
                 heatmap: bool = True, heatmap_measurement: str | None = None,
                 save_rois: bool = False, roi_cap: int = R.DEFAULT_CAP,
                 pixel_access: str = "auto", backend: ExecutorBackend | None = None) -> PlateRun:
    """Compute on every field of the plate, then attach the results (with a heat map
    and, when asked, the measured objects as ROIs). Raises
    :class:`~..pixels.SourceNotReady`, with nothing attached, when the server turns
    out to be still preparing one of its images. ``backend`` computes (default:
    ``workers`` processes).

    ``pixel_access`` ``auto`` reads the plate's files in the managed repository when
    they are on this machine and pass the checks of :func:`~.direct_pixels.open_pixels`,
    ``server`` always reads through RawPixelsStore; the results are the same."""
    backend = backend or ProcessPool(workers)
    started = time.time()
    source, access = open_pixels(conn, plate, pixel_access)
    notes: list[str] = []
    try:
        units = backend.run_units(bound, source, progress=progress, outlines=save_rois, notes=notes)
    finally:
        source.close()
    access = access_after_run(source, access)
    results = collect(plate.layout, bound, units, source=f"omero plate {plate.id}",
                      started=started, finished=time.time(), workers=backend.workers, executor=backend.kind)
    results.summary["pixel_access"] = access.summary()
    if notes:
        results.summary["notes"] = notes
    rois = R.RoiChoice(roi_cap, R.roi_z(bound.load.z, plate.layout.z_planes)) if save_rois else None
    if rois is not None and results.outlines:  # the run's JSON says what the cap left out
        results.summary["rois"] = R.plan(results.outlines, plate.layout.image_ids, roi_cap).summary()
    sink = OmeroResultSink(conn, plate, bound.name, attach_to=attach_to, outputs=outputs, replace=replace,
                           heatmap=heatmap, heatmap_measurement=heatmap_measurement, rois=rois)
    if len(results.errors) < len(units):  # a run where every unit failed attaches nothing
        sink.write(results)
    return PlateRun(plate, results, sink.report, access)


__all__ = ["PlateRun", "pipeline_from_choice", "prepare", "run_on_plate"]
