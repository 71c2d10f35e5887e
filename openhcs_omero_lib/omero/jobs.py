"""Running Run_HCS_Pipeline on the server from a workstation, through OMERO's script service.

The user's OMERO login and permissions are the only door: the job is started with
``IScript.runScript`` as the user, followed through the job's status and message
(``JobHandle``, where the running script publishes its progress) and cancelled with
``ScriptProcess.cancel`` or, from another session, ``JobHandle.cancelJob``.

The job belongs to the session that started it until it is detached
(``ScriptProcess.close(True)``): when that session ends, a job not detached is
stopped. It runs in a session of its own, which lives until the job is closed or
``omero.scripts.timeout`` passes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import Ice
import omero
from omero.rtypes import rbool, rint, rlist, rlong, rstring, unwrap

from openhcs_omero_lib.execution.progress import Progress, parse_outcome
from openhcs_omero_lib.omero import annotations as A
from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.omero.plate import all_groups, in_group, query_params
from openhcs_omero_lib.pipeline.loading import PipelineError, parse_spec
from openhcs_omero_lib.pipeline.presets import names as preset_names

SCRIPT_NAME = "Run_HCS_Pipeline.py"
SCRIPT_PATH = "/omero/openhcs/" + SCRIPT_NAME
PIPELINE_NS = "openhcs.omero/pipeline"
ATTACH_TO = {("plate",): "Plate", ("plate", "wells"): "Plate and wells",
             ("plate", "wells", "images"): "Plate, wells and images"}
OUTPUT_PARAMS = {"csv": "CSV", "json": "JSON", "table": "OMERO_Table", "key_values": "Key_Value_Pairs"}
_STATUS_OUTCOME = {"Finished": "finished", "Error": "failed", "Cancelled": "cancelled"}
RESULTS_WAIT = 5
"""The longest ScriptProcess.getResults agrees to wait, in seconds (omero-blitz ScriptProcessI)"""


class JobError(RuntimeError):
    """A job could not be started, found or followed; the message says why."""


@dataclass(frozen=True)
class JobState:
    """A script job as the server reports it."""

    id: int
    status: str
    """The server's: Submitted, Running, Finished, Error, Cancelled, ..."""
    message: str

    @property
    def progress(self) -> Progress | None:
        return Progress.parse(self.message)

    @property
    def outcome(self) -> str | None:
        """finished, failed or cancelled once the script has said so (or, for a
        script that could not say, once the server has ended the job)."""
        said = parse_outcome(self.message)
        if said:
            return said[0]
        if self.status in ("Finished", "Error"):
            return _STATUS_OUTCOME[self.status]
        return None

    @property
    def summary(self) -> str:
        said = parse_outcome(self.message)
        return said[1] if said else self.message


def find_script(conn, script: str | int | None = None) -> int:
    """The ID of the Run_HCS_Pipeline script: ``script`` as an ID or a server path,
    else the standard path, else the one official script of that name."""
    svc = conn.getScriptService()
    if isinstance(script, int) or (isinstance(script, str) and script.isdigit()):
        return int(script)
    sid = unwrap(svc.getScriptID(script or SCRIPT_PATH))
    if sid and sid > 0:
        return sid
    if script:
        raise JobError(f"no script {script} on the server")
    found = [f for f in svc.getScripts() if unwrap(f.getName()) == SCRIPT_NAME]
    if len(found) == 1:
        return unwrap(found[0].getId())
    if found:
        paths = ", ".join(unwrap(f.getPath()) + SCRIPT_NAME for f in found)
        raise JobError(f"several {SCRIPT_NAME} scripts on the server ({paths}); choose one with --script")
    raise JobError(f"{SCRIPT_NAME} is not installed on this server; an administrator installs it with "
                   "install.sh --omero-server (see the README)")


def pipeline_inputs(conn, pipeline: str) -> dict[str, Any]:
    """Script inputs for a preset name, or for a spec file uploaded (once per content)
    as a FileAnnotation. The file is checked here first, so a broken spec fails
    before anything is uploaded or started."""
    if pipeline in preset_names():
        return {"Pipeline": rstring(pipeline)}
    path = Path(pipeline)
    if not path.is_file():
        raise JobError(f"{pipeline!r} is neither a pipeline preset ({', '.join(preset_names())}) nor a file")
    data = path.read_bytes()
    try:
        parse_spec(data.decode("utf-8"), str(path))
    except UnicodeDecodeError:
        raise JobError(f"{path} is not a text file") from None
    except PipelineError as exc:
        raise JobError(str(exc)) from None
    return {"Pipeline_File_Annotation": rlong(upload_pipeline(conn, path.name, data))}


def upload_pipeline(conn, name: str, data: bytes) -> int:
    """A FileAnnotation holding ``data``, reused when the user uploaded the same content before."""
    description = "sha256:" + hashlib.sha256(data).hexdigest()
    found = conn.getQueryService().findAllByQuery(
        Q.PIPELINE_UPLOAD, query_params(ns=PIPELINE_NS, description=description, owner=conn.getUserId()),
        all_groups(conn))
    if found:
        return unwrap(found[0].getId())
    group_id = conn.getEventContext().groupId
    ofiles = A.upload_files(conn, [(name, data, "text/yaml")], group_id)
    try:
        return unwrap(A.file_annotations(conn, ofiles, PIPELINE_NS, group_id, description)[0].getId())
    except Exception:
        A.delete_objects(conn, {"OriginalFile": [unwrap(o.getId()) for o in ofiles]}, group_id)
        raise


def run_inputs(plates: list[int], *, workers: int | None = None, attach: tuple[str, ...] = ("plate", "wells"),
               outputs: tuple[str, ...] | None = None, replace: bool = True,
               runs: list[int] | None = None, pixel_access: str | None = None, heatmap: bool = True,
               heatmap_measurement: str | None = None, save_rois: bool = False,
               max_rois: int | None = None) -> dict[str, Any]:
    """The script's parameters (without the pipeline) for a run on ``plates``; ``runs``
    (PlateAcquisition IDs) measures only those acquisition runs; ``pixel_access``
    (``auto``, ``server``) how the script reads pixels (default: the script's);
    ``heatmap`` and its measurement, ``save_rois`` with at most ``max_rois`` per image
    (default: the script's)."""
    if not plates:
        raise JobError("give at least one plate")
    if attach not in ATTACH_TO:
        raise JobError(f"attach must be one of {', '.join(','.join(k) for k in ATTACH_TO)}")
    inputs = {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(p) for p in plates]),
              "Attach_To": rstring(ATTACH_TO[attach]), "Replace_Previous_Results": rbool(replace)}
    if workers:
        inputs["Workers"] = rint(workers)
    if runs:
        inputs["Runs"] = rlist([rlong(r) for r in runs])
    if pixel_access is not None:
        inputs["Pixel_Access"] = rstring(pixel_access)
    if not heatmap:
        inputs["Heat_Map"] = rbool(False)
    elif heatmap_measurement:
        inputs["Heat_Map_Measurement"] = rstring(heatmap_measurement)
    if save_rois:
        inputs["Save_ROIs"] = rbool(True)
        if max_rois is not None:
            inputs["Max_ROIs_Per_Image"] = rint(max_rois)
    if outputs is not None:
        unknown = set(outputs) - set(OUTPUT_PARAMS)
        if unknown:
            raise JobError(f"unknown outputs {sorted(unknown)}; choose from {', '.join(OUTPUT_PARAMS)}")
        inputs.update({param: rbool(key in outputs) for key, param in OUTPUT_PARAMS.items()})
    return inputs


def start_job(conn, script_id: int, inputs: dict[str, Any]):
    """Start the script; returns ``(job ID, ScriptProcess proxy)``."""
    try:
        proc = conn.getScriptService().runScript(script_id, inputs, None)
    except omero.ValidationException as exc:
        raise JobError(f"the server refused the parameters: {' '.join((exc.message or '').split())}") from None
    except omero.NoProcessorAvailable:
        raise JobError("No processor available: the server's Processor service is not running or cannot "
                       "run this script (see Troubleshooting in the README)") from None
    except omero.ApiUsageException as exc:
        raise JobError(f"cannot start script {script_id}: {exc.message}") from None
    return unwrap(proc.getJob().getId()), proc


class JobWatch:
    """Follows one job of the user's through a JobHandle: its state, and cancelling it."""

    def __init__(self, conn, job_id: int):
        self.conn = conn
        self.job_id = job_id
        self._handle = conn.c.sf.createJobHandle(all_groups(conn))
        try:
            self._handle.attach(job_id, all_groups(conn))
            job = self._handle.getJob(all_groups(conn))
        except omero.ServerError as exc:
            self.close()
            raise JobError(f"no job {job_id} of yours on this server ({exc.message})") from None
        # Writes (cancel) go to the job's own group.
        self._opts = in_group(conn, unwrap(job.getDetails().getGroup().getId()))

    def state(self) -> JobState:
        job = self._handle.getJob(self._opts)
        return JobState(self.job_id, unwrap(job.getStatus().getValue()), unwrap(job.getMessage()) or "")

    def cancel(self) -> None:
        self._handle.cancelJob(self._opts)

    def close(self) -> None:
        try:
            self._handle.close()
        except omero.ServerError:
            pass

    def __enter__(self) -> JobWatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_for_outcome(watch: JobWatch, timeout: float, interval: float = 0.5) -> JobState:
    """The job's state once it has an outcome, or the last one seen at ``timeout``."""
    deadline = time.monotonic() + timeout
    state = watch.state()
    while state.outcome is None and time.monotonic() < deadline:
        time.sleep(interval)
        state = watch.state()
    return state


def detach(proc) -> None:
    """Let the job outlive this session. A job's InteractiveProcessor is a servant of
    the launching session: when that session ends, its servants are closed
    (omero-blitz omero/cmd/SessionI.java, cleanServants), which stops a job that was
    not detached (InteractiveProcessorI.stop) and ends the job's session."""
    try:
        proc.close(True)
    except (omero.ServerError, Ice.Exception) as exc:
        raise JobError(f"the job could not be detached from this session ({getattr(exc, 'message', None) or exc}); "
                       "it stops when this session ends") from None


def close_job(proc) -> None:
    """Release the job's InteractiveProcessor once its results are read: this ends
    the job's session (and would shut down a script still running)."""
    try:
        proc.close(False)
    except (omero.ServerError, Ice.Exception):
        pass  # already gone with its session: nothing is left to release


def results_of(proc, timeout: float = 5.0, interval: float = 0.2) -> dict[str, Any]:
    """The script's outputs (Message, File_Annotation, Attached_IDs, stdout, stderr) as
    plain values, once its process has ended (JobError after ``timeout`` seconds).

    ``ScriptProcess.getResults`` refuses to wait more than 5 s and answers only once
    (omero-blitz ScriptProcessI, InteractiveProcessorI), so this polls until the
    process has ended (polling is also when the server sets the job's status and
    keeps its stdout and stderr), then asks once."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            raise JobError(f"the job is still running after {timeout:.0f} s")
        time.sleep(interval)
    try:
        results = proc.getResults(RESULTS_WAIT)
    except omero.ServerError as exc:
        raise JobError(f"its outputs could not be read ({exc.message}); a job's outputs live in its session, "
                       "which the server ends after omero.scripts.timeout") from None
    out = {}
    for key, value in results.items():
        obj = value.getValue() if isinstance(value, omero.RObject) else None
        out[key] = unwrap(obj.getId()) if obj is not None else unwrap(value)
    return out


__all__ = ["JobError", "JobState", "JobWatch", "find_script", "pipeline_inputs", "upload_pipeline",
           "run_inputs", "start_job", "detach", "close_job", "wait_for_outcome", "results_of", "SCRIPT_PATH",
           "PIPELINE_NS"]
