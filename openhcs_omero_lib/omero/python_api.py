"""The OMERO side of the Python API: running on a plate and reading its results back.

:func:`run_plate` is what :func:`openhcs_omero_lib.running.run_pipeline` does when
given a connection: the same checks, computing and attaching as ``Run_HCS_Pipeline``
(:mod:`.run`). :func:`read_results` reads the results a run attached into the same
DataFrames: the field-level OMERO.table when there is one, else the images CSV; the
per-well table is computed from the fields as the run computed it.
"""

from __future__ import annotations

import json
from typing import Any

import omero
import omero.gateway  # noqa: F401  (it loads the omero.model classes used here)
import omero.model
import pandas as pd

from openhcs_omero_lib.engine import run_pipeline as run_source
from openhcs_omero_lib.execution.backend import ExecutorBackend
from openhcs_omero_lib.omero import annotations as A
from openhcs_omero_lib.omero.direct_pixels import ACCESS_CHOICES, access_after_run, open_pixels
from openhcs_omero_lib.omero.files import file_annotations, read_csv, read_file
from openhcs_omero_lib.omero.metadata import OMEROMetadataHandler
from openhcs_omero_lib.omero.plate import OmeroInputError, in_group, load_plate
from openhcs_omero_lib.omero.run import prepare, run_on_plate
from openhcs_omero_lib.omero.sink import attaches_anything, results_namespace
from openhcs_omero_lib.omero.targets import plate_id_of
from openhcs_omero_lib.pipeline.loading import PipelineError, load_spec
from openhcs_omero_lib.pipeline.spec import PipelineSpec
from openhcs_omero_lib.plates.layout import parse_well, row_letters
from openhcs_omero_lib.results.run_result import RunResult
from openhcs_omero_lib.results.tables import IMAGES_CSV, RESULTS_JSON, RUN_COLUMNS, wells_table

TABLE_BATCH = 1000
_FIELD_KEYS = ("Image", "well_id", "well_name", "field", "timepoint", *RUN_COLUMNS, "error")


def run_plate(conn, plate: Any, spec: PipelineSpec, params: dict[str, Any], *, backend: ExecutorBackend,
              attach: tuple[str, ...], outputs: tuple[str, ...], replace: bool, runs: list[int] | None,
              handler: OMEROMetadataHandler | None, progress, pixel_access: str = "auto") -> RunResult:
    """Check, compute, attach (unless ``attach`` is empty); see ``run_pipeline``."""
    pid = plate_id_of(plate)
    if pixel_access not in ACCESS_CHOICES:
        raise OmeroInputError(f"pixel_access must be one of {', '.join(ACCESS_CHOICES)}, not {pixel_access!r}")
    attaching = bool(attach)
    if attaching and not attaches_anything(attach, outputs):
        raise OmeroInputError(f"attach={','.join(attach)} with outputs={','.join(outputs) or 'none'} would attach "
                              "nothing: key-value pairs go on wells, per-field CSVs on images")
    prepared = prepare(conn, "Plate", [pid], spec, handler, runs, outputs if attaching else (), params,
                       annotate=attaching, pixel_access=pixel_access)
    if not prepared:
        raise OmeroInputError(f"plate {pid} has none of the runs {', '.join(map(str, runs or []))}")
    omero_plate, bound = prepared[0]
    if not attaching:
        source, access = open_pixels(conn, omero_plate, pixel_access)
        with source:
            results = run_source(source, bound, backend=backend, progress=progress,
                                 source_label=f"omero plate {pid}")
        results.summary["pixel_access"] = access_after_run(source, access).summary()
        return RunResult(results.images, results.wells, results.summary, plate_id=pid)
    run = run_on_plate(conn, omero_plate, bound, backend=backend, attach_to=attach, outputs=outputs,
                       replace=replace, progress=progress, pixel_access=pixel_access)
    report = run.report
    return RunResult(run.results.images, run.results.wells, run.results.summary, plate_id=pid,
                     attached={k: list(v) for k, v in report.created.items() if v}, replaced=report.replaced,
                     others=dict(report.others))


def read_results(conn, plate: Any, pipeline: Any, *, handler: OMEROMetadataHandler | None = None) -> RunResult:
    """The results of ``pipeline`` (its name, a preset, a spec file or a PipelineSpec)
    attached to ``plate``, as the DataFrames the run returned: from the field-level
    OMERO.table, or from the images CSV when there is no table (or OMERO.tables cannot
    read it); ``summary`` from the JSON when it was attached. Your own results if you
    have some there, else the newest user's. Raises LookupError when there are none."""
    name = _pipeline_name(pipeline)
    pid = plate_id_of(plate)
    found = load_plate(conn, pid, handler)
    files = file_annotations(conn, "Plate", pid, results_namespace(name), f"Plate:{pid}")
    if not files:
        raise LookupError(f"plate {pid} has no results of pipeline '{name}' (run it with the results attached "
                          "to the plate)")
    owner = next((f.owner_id for f in files if f.mine), None)
    if owner is None:
        owner = max(files, key=lambda f: f.annotation_id).owner_id
    mine = {f.name: f for f in files if f.owner_id == owner}
    table = next((f for f in mine.values() if f.mimetype == "OMERO.tables" and f.name.startswith(f"{name}_")
                  and f.name.endswith("_fields.omero.h5")), None)
    csv_file = mine.get(f"{name}_{IMAGES_CSV}")
    images, source, used = None, "", []
    if table is not None:
        try:
            images = _images_from_table(_read_table(conn, table.file_id, found.group_id))
            source, used = "table", [table]
        except omero.ServerError:  # OMERO.tables off or unable: the CSV holds the same
            if csv_file is None:
                raise
    if images is None:
        if csv_file is None:
            raise LookupError(f"plate {pid}: the results of pipeline '{name}' have neither the field table nor "
                              f"{name}_{IMAGES_CSV} (attach the table or CSV output to the plate)")
        images = _images_from_csv(read_file(conn, csv_file.file_id, csv_file.size, found.group_id))
        source, used = "csv", [csv_file]
    summary: dict[str, Any] = {}
    summary_file = mine.get(f"{name}_{RESULTS_JSON}")
    if summary_file is not None:
        summary = json.loads(read_file(conn, summary_file.file_id, summary_file.size, found.group_id))
        used.append(summary_file)
    return RunResult(images, wells_table(found.layout, images), summary, plate_id=pid,
                     attached={"FileAnnotation": [f.annotation_id for f in used]}, source=source,
                     owner=A.user_name(conn, owner))


def _pipeline_name(pipeline: Any) -> str:
    if isinstance(pipeline, PipelineSpec):
        return pipeline.name
    if isinstance(pipeline, dict) and isinstance(pipeline.get("name"), str):
        return pipeline["name"]
    text = str(pipeline)
    if text.endswith((".yaml", ".yml", ".json")):
        try:
            return load_spec(text).name
        except PipelineError:
            pass
    return text


def _read_table(conn, file_id: int, group_id: int) -> pd.DataFrame:
    """An OMERO.table's rows, read in batches."""
    opts = in_group(conn, group_id)
    table = conn.c.sf.sharedResources(opts).openTable(omero.model.OriginalFileI(file_id, False), opts)
    if table is None:
        raise omero.ApiUsageException(message=f"OMERO.tables could not open OriginalFile:{file_id}")
    try:
        headers = table.getHeaders(opts)
        rows = table.getNumberOfRows(opts)
        values: dict[str, list] = {h.name: [] for h in headers}
        for start in range(0, rows, TABLE_BATCH):
            data = table.read(list(range(len(headers))), start, min(rows, start + TABLE_BATCH), opts)
            for column in data.columns:
                values[column.name].extend(column.values)
    finally:
        table.close(opts)
    return pd.DataFrame(values)


def _images_from_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The run's images DataFrame from its field-level table (``sink.field_table``)."""
    wells = [str(w) for w in frame["well_name"]]
    positions = [parse_well(w) for w in wells]
    out = pd.DataFrame({"well": wells, "row": [row_letters(r) for r, _ in positions],
                        "column": [c for _, c in positions], "site": frame["field"].astype("int64"),
                        "timepoint": frame["timepoint"].astype("int64")})
    if "run_id" in frame:
        out["run_id"] = pd.array(frame["run_id"], dtype="Int64")
        out["run"] = frame["run"].astype(str)
    out["image_id"] = pd.array(frame["Image"], dtype="Int64")
    for column in frame.columns:
        if column not in _FIELD_KEYS:
            out[column] = _measurement(column, frame[column])
    out["error"] = frame["error"].astype(str)
    return out


def _images_from_csv(data: bytes) -> pd.DataFrame:
    """The run's images DataFrame from its images CSV, with the run's column types."""
    frame = read_csv(data, keep_default_na=False, na_values=[""],
                     dtype={"well": str, "row": str, "run": str, "error": str})
    for column in frame.columns:
        if column in ("error", "run"):
            frame[column] = frame[column].fillna("")
        elif column in ("run_id", "image_id"):
            frame[column] = pd.array(frame[column], dtype="Int64")
        elif column not in ("well", "row", "column", "site", "timepoint"):
            frame[column] = _measurement(column, frame[column])
    return frame


def _measurement(name: str, values: pd.Series) -> pd.Series:
    """Counts are whole numbers (<NA> where a field failed), the rest floats, as a run makes them."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers.astype("Int64") if name.endswith("_count") else numbers.astype(float)


__all__ = ["read_results", "run_plate"]
