"""What the OMERO scripts call: dialog values in, a message and an annotation out.

The scripts under ``scripts/`` only declare parameters and call these functions, so
that everything here can be tested without the script service.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import Ice
import omero

from openhcs_omero_lib.execution.backend import ClusterError, open_backend
from openhcs_omero_lib.execution.cores import available_cores
from openhcs_omero_lib.execution.executor import Cancelled
from openhcs_omero_lib.execution.progress import RunProgress
from openhcs_omero_lib.execution.settings import SettingsError
from openhcs_omero_lib.omero import annotations as A
from openhcs_omero_lib.omero import rois as R
from openhcs_omero_lib.omero.direct_pixels import ACCESS_CHOICES
from openhcs_omero_lib.omero.plate import OmeroInputError, load_plate, plate_ids_for
from openhcs_omero_lib.omero.run import pipeline_from_choice, prepare, run_on_plate
from openhcs_omero_lib.omero.sink import NS_PREFIX, TABLE_DESCRIPTION, attaches_anything
from openhcs_omero_lib.omero.tuning_params import values_from_inputs
from openhcs_omero_lib.pipeline.loading import PipelineError
from openhcs_omero_lib.pipeline.params import check_values
from openhcs_omero_lib.plates.pixels import SourceNotReady
from openhcs_omero_lib.plates.virtual_backend import VirtualBackend

ATTACH_VALUES = {
    "Plate": ("plate",),
    "Plate and wells": ("plate", "wells"),
    "Plate, wells and images": ("plate", "wells", "images"),
}
DEFAULTS = {"Data_Type": "Plate", "Pipeline": "nuclei_count", "Workers": 2, "Attach_To": "Plate and wells",
            "CSV": True, "JSON": True, "OMERO_Table": True, "Key_Value_Pairs": True,
            "Replace_Previous_Results": True, "Heat_Map": True, "Save_ROIs": False,
            "Max_ROIs_Per_Image": R.DEFAULT_CAP, "Pixel_Access": "auto"}


@dataclass
class ScriptOutcome:
    message: str
    file_annotation: Any = None
    outcome: str = "finished"
    """finished, failed or cancelled"""
    attached: dict[str, list[int]] = field(default_factory=dict)
    """IDs of what the run attached, by kind (FileAnnotation, MapAnnotation)"""

    @property
    def ok(self) -> bool:
        return self.outcome == "finished"


def failure_reason(exc: BaseException) -> str | None:
    """One line for errors a user can act on (bad input, the server refusing or
    failing, the connection or session lost); None for bugs."""
    if isinstance(exc, (OmeroInputError, PipelineError)):
        return _one_line(str(exc))
    if isinstance(exc, omero.SecurityViolation):
        return _one_line(f"permission denied: {exc.message}")
    # A session's services go with it: calls on them find no object on a server.
    if isinstance(exc, (omero.RemovedSessionException, omero.SessionTimeoutException, Ice.ObjectNotExistException)):
        return "the session ended before the run finished"
    if isinstance(exc, omero.ServerError):
        return _one_line(f"server error ({type(exc).__name__}): {exc.message}")
    if isinstance(exc, Ice.TimeoutException):
        return f"the server did not answer in time ({type(exc).__name__})"
    if isinstance(exc, (Ice.ConnectionLostException, Ice.ConnectFailedException, Ice.CommunicatorDestroyedException,
                        Ice.ConnectionRefusedException, Ice.SocketException)):
        return f"lost the connection to the server ({type(exc).__name__})"
    return None


def _one_line(text: str) -> str:
    """Names in messages (a plate's, a file's) may hold line breaks."""
    return " ".join(text.split())


def _failure(exc: BaseException, prefix: str) -> ScriptOutcome:
    why = failure_reason(exc)
    if why is None:
        traceback.print_exc()  # lands in the job's stderr for the administrator
        why = _one_line(f"{type(exc).__name__}: {exc}")
    return ScriptOutcome(f"{prefix}: {why}", None, outcome="failed")


def run_pipeline_script(conn, params: dict[str, Any], job=None) -> ScriptOutcome:
    """Run_HCS_Pipeline: every plate is checked before the first computes; results of
    a plate are attached only when its run completed.

    ``job`` (a :class:`~.job_progress.JobMessagePublisher`) receives the run's
    progress and can ask it to stop; a stopped run attaches nothing more.
    """
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    started = time.time()
    try:
        spec = pipeline_from_choice(conn, p.get("Pipeline"), p.get("Pipeline_File_Annotation"))
        tuning = check_values(spec, values_from_inputs(p))
        outputs = tuple(name for key, name in (("CSV", "csv"), ("JSON", "json"), ("OMERO_Table", "table"),
                                                ("Key_Value_Pairs", "key_values")) if p[key])
        if not outputs:
            raise OmeroInputError("choose at least one output (CSV, JSON, OMERO_Table, Key_Value_Pairs)")
        attach = ATTACH_VALUES.get(p["Attach_To"])
        if attach is None:
            raise OmeroInputError(f"Attach_To must be one of {', '.join(ATTACH_VALUES)}")
        if not attaches_anything(attach, outputs):
            raise OmeroInputError(f"Attach_To={p['Attach_To']} with only {', '.join(outputs)} would attach "
                                  "nothing: key-value pairs go on wells, per-field CSVs on images")
        workers = max(1, min(int(p["Workers"]), available_cores()))
        if p["Pixel_Access"] not in ACCESS_CHOICES:
            raise OmeroInputError(f"Pixel_Access must be one of {', '.join(ACCESS_CHOICES)}, not {p['Pixel_Access']}")
        if int(p["Max_ROIs_Per_Image"]) < 1:
            raise OmeroInputError(f"Max_ROIs_Per_Image must be at least 1, got {p['Max_ROIs_Per_Image']}")
        prepared = prepare(conn, p["Data_Type"], list(p.get("IDs") or []), spec,
                           runs=list(p.get("Runs") or []), outputs=outputs, params=tuning,
                           pixel_access=p["Pixel_Access"])
        measurement = _heatmap_measurement(p, prepared)
    except Exception as exc:
        return _failure(exc, "Nothing attached")
    try:
        backend = open_backend(workers)  # the server's settings may send the units to a Dask cluster
    except (SettingsError, ClusterError) as exc:
        return ScriptOutcome(f"Nothing attached: {exc}", None, outcome="failed")
    try:
        return _run_plates(conn, p, spec, prepared, backend, job, attach, outputs, measurement, started)
    finally:
        backend.close()


def _run_plates(conn, p: dict[str, Any], spec, prepared, backend, job, attach, outputs, measurement,
                started: float) -> ScriptOutcome:
    progress = None
    if job is not None:
        progress = RunProgress([(len(pl.layout.wells) * len(pl.layout.run_ids()), pl.layout.n_units)
                                for pl, _ in prepared],
                               job.publish, job.should_stop)
    lines, file_ann, failed_units, attached, not_ready = [], None, 0, {}, 0
    for index, (plate, bound) in enumerate(prepared):
        try:
            run = run_on_plate(conn, plate, bound, backend=backend, attach_to=attach, outputs=outputs,
                               replace=p["Replace_Previous_Results"],
                               progress=progress.plate_callback(index) if progress else None,
                               heatmap=bool(p["Heat_Map"]), heatmap_measurement=measurement,
                               save_rois=bool(p["Save_ROIs"]), roi_cap=int(p["Max_ROIs_Per_Image"]),
                               pixel_access=p["Pixel_Access"])
        except SourceNotReady as exc:  # this plate only; the others may be ready
            lines.append(f"{exc}; nothing attached to it")
            not_ready += 1
            continue
        except Cancelled:
            lines.append(f"stopped during plate {plate.id}: nothing attached to it")
            return ScriptOutcome("; ".join(lines), file_ann, outcome="cancelled", attached=attached)
        except Exception as exc:
            failure = _failure(exc, f"plate {plate.id}: nothing attached" if lines else "Nothing attached")
            failure.message = "; ".join(lines + [failure.message])
            failure.file_annotation, failure.attached = file_ann, attached
            return failure
        failed_units += run.results.summary["units_failed"]
        lines.append(_plate_line(run))
        file_ann = file_ann or run.report.wells_csv_annotation
        for kind, ids in run.report.created.items():
            if ids and kind != "Roi":  # thousands of them: the Message says how many
                attached.setdefault(kind, []).extend(ids)
    head = (f"{spec.name} on {len(prepared)} plate{'s' if len(prepared) != 1 else ''} with "
            f"{backend.describe()} in {time.time() - started:.1f} s")
    if failed_units:
        head += f"; {failed_units} field(s) failed (see the error column)"
    if not_ready:
        head += f"; {not_ready} plate{'s' if not_ready != 1 else ''} not run"
    return ScriptOutcome("; ".join([head] + lines), file_ann, outcome="failed" if not_ready else "finished",
                         attached=attached)


def _heatmap_measurement(p: dict[str, Any], prepared) -> str | None:
    """The heat map's measurement, checked against the pipeline before anything runs."""
    from openhcs_omero_lib.pictures.heatmap import check_measurement

    if not p["Heat_Map"]:
        return None
    chosen = None
    for plate, bound in prepared:  # "all" channels differ from plate to plate
        try:
            chosen = check_measurement(bound, p.get("Heat_Map_Measurement"))
        except ValueError as exc:
            raise OmeroInputError(f"Heat_Map_Measurement: plate {plate.id}: {exc}") from None
    return chosen


def _plate_line(run) -> str:
    s = run.results.summary
    wells = run.results.wells
    counts = [c for c in wells.columns if c.endswith("_count")]
    total = f", {counts[0]} total {int(wells[counts[0]].sum())}" if counts else ""
    if run.report.count() == 0:
        first = s["errors"][0]["error"] if s["errors"] else "no results"
        return f"plate {run.plate.id}: every field failed ({first}); nothing attached"
    line = (f"plate {run.plate.id} ({run.plate.layout.name}): {s['timing']['units']} fields{total}; "
            f"attached {run.report.count()} annotations, replaced {run.report.replaced}")
    if run.report.heatmap_note:
        line += f"; {run.report.heatmap_note}"
    if run.access.note():
        line += f"; {run.access.note()}"
    rois = run.report.rois
    if rois is not None:
        line += f"; {len(rois.rois)} ROIs on {rois.images} images"
        if rois.capped:
            line += f" ({rois.note()})"
    if run.report.not_replaced:
        line += (f"; could not remove {run.report.not_replaced} earlier annotations "
                 f"({run.report.replace_error})")
    if run.report.others:
        line += f"; other users' results of this pipeline stay ({A.describe_others(run.report.others)})"
    for note in s.get("notes", []):
        line += f"; {_one_line(note)}"
    return line


def describe_plates_script(conn, params: dict[str, Any], samples: int = 5) -> ScriptOutcome:
    """Describe_Plate: the layout as the virtual backend sees it."""
    try:
        lines = []
        for pid in plate_ids_for(conn, params.get("Data_Type", "Plate"), list(params.get("IDs") or [])):
            plate = load_plate(conn, pid)
            backend = VirtualBackend(plate.layout)
            names = [p.rsplit("/", 1)[-1] for _, p in zip(range(samples), backend.list_files())]
            lines.append(f"plate {pid}: {plate.layout.describe()}; {plate.layout.n_planes} planes under "
                         f"{backend.root}, e.g. {', '.join(names)}")
        return ScriptOutcome("\n".join(lines))
    except Exception as exc:
        return _failure(exc, "Cannot describe")


def delete_results_script(conn, params: dict[str, Any]) -> ScriptOutcome:
    """Delete_HCS_Results: the user's own annotations of this bundle on the plates,
    wells and images; other users' stay, and the message says whose."""
    try:
        removed, removed_rois, left = 0, 0, {}
        for pid in plate_ids_for(conn, params.get("Data_Type", "Plate"), list(params.get("IDs") or [])):
            plate = load_plate(conn, pid)
            targets = {"Plate": [pid], "Well": [w.id for w in plate.layout.wells if w.id is not None],
                       "Image": sorted(set(plate.layout.image_ids.values()))}
            found = []
            for kind, ids in targets.items():
                found += A.find_owned_annotations(conn, kind, ids, NS_PREFIX, ns_prefix=True)
            found += A.find_owned_annotations(conn, "Plate", [pid], A.BULK_ANNOTATIONS_NS,
                                              description=lambda d: d.startswith(TABLE_DESCRIPTION + " "))
            found += R.find_rois(conn, targets["Image"], NS_PREFIX, ns_prefix=True)
            mine, others = A.split_by_owner(conn, found)
            A.delete_objects(conn, A.group_targets(mine), plate.group_id)
            rois = sum(kind == "Roi" for kind, _ in mine)
            removed += len(mine) - rois
            removed_rois += rois
            for name, n in others.items():
                left[name] = left.get(name, 0) + n
        message = f"removed {removed} openhcs-omero annotations"
        if removed_rois:
            message += f" and {removed_rois} ROIs"
        if left:
            message += f"; left other users' ({A.describe_others(left)})"
        return ScriptOutcome(message)
    except Exception as exc:
        return _failure(exc, "Nothing removed")
