"""End-to-end scenarios against an OMERO server, shared by the stand-in suite
(``test_scenarios_standin.py``) and the real-server suite (``integration/``).

Each scenario is a plain function of a *target* and a synthetic plate folder: it
puts the plate on the server through the API (:mod:`openhcs_omero_lib.testing.upload`),
runs the bundle's scripts through OMERO's script service (``jobs.start_job`` or the
``openhcs-omero launch`` command), and reads what they attached the way a user's
client does (``BlitzGateway`` wrappers: ``listAnnotations``, file contents, the
OMERO.table), never through the adapter that wrote it. A :class:`Target` says how
to reach the server and records what the scenarios create, so that
:meth:`Target.cleanup` can remove it, whatever happened in between.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "scripts" / "omero" / "openhcs"
SCRIPT_FOLDER = "/omero/openhcs/"
RUN, DESCRIBE, DELETE = "Run_HCS_Pipeline.py", "Describe_Plate.py", "Delete_HCS_Results.py"
JOB_TIMEOUT = 600.0
KEEP_NS = "openhcs.omero.tests/not-ours"
CONNECTION_VARIABLES = ("OMERO_HOST", "OMERO_PORT", "OMERO_USER", "OMERO_PASSWORD", "OMERO_SESSION_KEY",
                        "OMERO_GROUP", "OMERO_ROUTER")


class Target:
    """A server the scenarios run against. Subclasses give :meth:`settings` (and may
    wrap :meth:`connect`); everything else is shared, so the real-server suite runs
    the code the stand-in suite runs."""

    def __init__(self) -> None:
        self.plates: list[int] = []
        self.images: list[int] = []
        self.tracked: list[tuple[str, int, int]] = []
        """(kind, ID, group) of other objects to delete"""
        self.seen_results: list[int] = []
        """FileAnnotations the scripts attached; cleanup must leave none"""

    def settings(self):
        raise NotImplementedError

    def connect(self):
        from openhcs_omero_lib.omero.connection import connect

        return connect(self.settings())

    def cli_args(self) -> list[str]:
        s = self.settings()
        args = ["--host", s.host, "--port", str(s.port)]
        args += ["--user", s.user] if s.user else []
        args += ["--router", s.router] if s.router else []
        return args

    def cli_env(self) -> dict[str, str]:
        """Credentials as the command reads them; never printed."""
        s = self.settings()
        return {"OMERO_SESSION_KEY": s.session_key} if s.session_key else {"OMERO_PASSWORD": s.password or ""}

    def script_id(self, name: str = RUN) -> int:
        from openhcs_omero_lib.omero.jobs import find_script

        with connected(self) as conn:
            return find_script(conn, SCRIPT_FOLDER + name)

    def import_plate(self, folder, missing=()) -> int:
        """``folder``, or ``[(run name, folder), ...]``, and ``missing`` as
        :func:`~openhcs_omero_lib.testing.upload.upload_plate` takes them."""
        from openhcs_omero_lib.omero.plate import load_plate
        from openhcs_omero_lib.testing.upload import upload_plate

        with connected(self) as conn:
            plate_id = upload_plate(conn, folder, missing=missing)
            self.plates.append(plate_id)
            self.images += load_plate(conn, plate_id, cache=None).layout.image_ids.values()
        return plate_id

    def track(self, conn, kind: str, ids: list[int]) -> None:
        from openhcs_omero_lib.testing.upload import write_group

        group = write_group(conn)
        self.tracked += [(kind, i, group) for i in ids]

    def cleanup(self) -> list[str]:
        """Remove the bundle's results from the plates, the plates with their images,
        and every tracked object; returns what could not be removed (empty when all
        went)."""
        from openhcs_omero_lib.omero import annotations as A
        from openhcs_omero_lib.omero.script_support import delete_results_script
        from openhcs_omero_lib.testing.upload import delete_plate

        problems = []
        with connected(self) as conn:
            for plate_id in self.plates:
                outcome = delete_results_script(conn, {"Data_Type": "Plate", "IDs": [plate_id]})
                if not outcome.ok:
                    problems.append(f"results of Plate:{plate_id}: {outcome.message}")
                try:
                    delete_plate(conn, plate_id)
                except Exception as exc:
                    problems.append(f"Plate:{plate_id}: {exc}")
            by_group: dict[int, dict[str, list[int]]] = {}
            for kind, oid, group in self.tracked:
                by_group.setdefault(group, {}).setdefault(kind, []).append(oid)
            for group, targets in by_group.items():
                try:
                    A.delete_objects(conn, targets, group)
                except Exception as exc:
                    problems.append(f"{targets}: {exc}")
            problems += self.leftovers(conn)
        self.plates, self.images, self.tracked, self.seen_results = [], [], [], []
        return problems

    def leftovers(self, conn) -> list[str]:
        """Recorded objects that still exist, looked up across the user's groups."""
        from openhcs_omero_lib.omero import queries as Q
        from openhcs_omero_lib.omero.plate import all_groups, query_params

        wanted = [("Plate", i) for i in self.plates] + [("Image", i) for i in self.images]
        wanted += [(kind, i) for kind, i, _ in self.tracked] + [("FileAnnotation", i) for i in self.seen_results]
        query = conn.getQueryService()
        return [f"{kind}:{oid} is still there" for kind, oid in dict.fromkeys(wanted)
                if query.projection(Q.OBJECT_EXISTS.format(kind=kind), query_params(id=oid), all_groups(conn))]


@contextmanager
def connected(target: Target) -> Iterator[Any]:
    from openhcs_omero_lib.omero.connection import disconnect

    conn = target.connect()
    try:
        yield conn
    finally:
        disconnect(conn)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ, and no other connection settings, for the duration."""
    saved = {k: os.environ.pop(k) for k in CONNECTION_VARIABLES if k in os.environ}
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)
        os.environ.update(saved)


# ---- running scripts -------------------------------------------------------------------------

def run_job(conn, script_id: int, inputs: dict[str, Any], timeout: float = JOB_TIMEOUT):
    """Run a script through the script service; ``(JobState, outputs)`` once it has an outcome."""
    from openhcs_omero_lib.omero import jobs

    job_id, proc = jobs.start_job(conn, script_id, inputs)
    try:
        with jobs.JobWatch(conn, job_id) as watch:
            state = jobs.wait_for_outcome(watch, timeout, interval=0.2)
        assert state.outcome is not None, f"job {job_id} had no outcome after {timeout:.0f} s: {state}"
        return state, jobs.results_of(proc, timeout=60)
    finally:
        jobs.close_job(proc)


def launch(target: Target, *argv: str) -> int:
    """``openhcs-omero launch ...`` against the target; its exit status."""
    from openhcs_omero_lib.cli.app import main

    with environment(target.cli_env()):
        return main(["launch", *argv, "--no-progress", "--interval", "0.2", *target.cli_args()])


def pipeline_inputs(target: Target, conn, pipeline: str) -> dict[str, Any]:
    """Script inputs for a preset or a spec file; an uploaded spec is tracked for cleanup."""
    from omero.rtypes import unwrap

    from openhcs_omero_lib.omero import jobs

    inputs = jobs.pipeline_inputs(conn, pipeline)
    if "Pipeline_File_Annotation" in inputs:
        target.track(conn, "FileAnnotation", [unwrap(inputs["Pipeline_File_Annotation"])])
    return inputs


# Deliberately slow (two wide median filters, about a second a field on a laptop), so
# that a job is still computing when the cancel scenario cancels it.
SLOW_SPEC = """name: slow_count
load: {channels: all, z: max}
steps:
  - {op: median, input: ch1, output: smooth, radius: 20}
  - {op: median, input: smooth, output: smoother, radius: 20}
  - {op: threshold, input: smoother, output: mask, method: otsu}
  - {op: label, input: mask, output: nuclei}
  - {op: measure_objects, labels: nuclei}
"""


def unique_spec(folder: Path, name: str, text: str | None = None) -> Path:
    """A spec file (by default the nuclei_count preset under another name) whose
    content no earlier run uploaded."""
    from openhcs_omero_lib.pipeline.loading import preset_text

    text = text or preset_text("nuclei_count").replace("name: nuclei_count", f"name: {name}", 1)
    path = Path(folder) / f"{name}.yaml"
    path.write_text(f"# openhcs-omero test run {uuid.uuid4().hex}\n{text}")
    return path


# ---- reading what a plate holds, as a client does ----------------------------------------------

@dataclass
class PlateView:
    """A plate's wells and fields, and the annotations of one pipeline on them."""

    plate_id: int
    group_id: int
    wells: dict[str, int]
    """well name -> Well ID"""
    images: dict[tuple[str, int, int | None], int]
    """(well, field, run ID) -> Image ID"""
    runs: dict[int, str] = field(default_factory=dict)
    """run (PlateAcquisition) ID -> name"""
    plate_files: dict[str, bytes] = field(default_factory=dict)
    table: pd.DataFrame | None = None
    """the bulk-annotation table"""
    field_table: pd.DataFrame | None = None
    """the field-level table in the pipeline's namespace"""
    table_files: dict[str, int] = field(default_factory=dict)
    """kind of table ("wells", "fields") -> its OriginalFile ID"""
    well_files: dict[str, list[bytes]] = field(default_factory=dict)
    well_pairs: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)
    image_files: dict[int, list[bytes]] = field(default_factory=dict)
    ids: dict[str, set[int]] = field(default_factory=dict)
    """annotation class -> IDs of every annotation above"""

    def csv(self, name: str) -> pd.DataFrame:
        return pd.read_csv(io.BytesIO(self.plate_files[name]), keep_default_na=False)

    def all_ids(self) -> set[tuple[str, int]]:
        return {(kind, i) for kind, ids in self.ids.items() for i in ids}


def _well_name(well) -> str:
    from openhcs_omero_lib.plates.layout import well_name

    return well_name(well.getRow() + 1, well.getColumn() + 1)


def _note(view: PlateView, ann) -> None:
    view.ids.setdefault(type(ann._obj).__name__.rstrip("I"), set()).add(ann.getId())


def walk_plate(conn, plate_id: int):
    """The plate's wrapper and ``[(well name, well wrapper, {(field, run ID): image wrapper})]``,
    from ``getObject`` and ``listChildren`` as a client walks a plate. A field's
    number is its index in the well's list (gaps are null entries there), counted from
    the lowest index of its run on the plate (omero-py's
    ``PlateWrapper.getNumberOfFields(run)``)."""
    from omero.gateway import ImageWrapper

    plate = conn.getObject("Plate", plate_id)
    assert plate is not None, f"Plate:{plate_id} is not readable"
    wells, samples = {}, []
    for well in plate.listChildren():  # a well may come more than once (a fetch join's rows)
        wells[well.getId()] = (_well_name(well), well, {})
        for index, sample in enumerate(well.copyWellSamples()):
            if sample is not None:
                run = sample.getPlateAcquisition()
                samples.append((well, index, run.getId().getValue() if run is not None else None, sample))
    first = {}
    for _, index, run, _ in samples:
        first[run] = min(first.get(run, index), index)
    for well, index, run, sample in samples:
        start = first[run] if run is not None else 0
        wells[well.getId()][2][(index - start + 1, run)] = ImageWrapper(conn, sample.getImage())
    return plate, list(wells.values())


def read_plate(conn, plate_id: int, pipeline: str) -> PlateView:
    """The plate through BlitzGateway and what ``pipeline`` attached to it, its wells and images."""
    from openhcs_omero_lib.omero.annotations import BULK_ANNOTATIONS_NS
    from openhcs_omero_lib.omero.sink import results_namespace, table_description

    plate, wells = walk_plate(conn, plate_id)
    ns = results_namespace(pipeline)
    view = PlateView(plate_id, plate.details.group.id.val, {name: w.getId() for name, w, _ in wells},
                     {(name, site, run): image.getId() for name, _, images in wells
                      for (site, run), image in images.items()},
                     {a.getId(): a.getName() for a in plate.listPlateAcquisitions()})
    for ann in plate.listAnnotations(ns=ns):
        if ann.getFile().getMimetype() == "OMERO.tables":
            assert view.field_table is None, f"two field tables of {pipeline} on Plate:{plate_id}"
            view.field_table = read_table(conn, ann.getFile().getId(), view.group_id)
            view.table_files["fields"] = ann.getFile().getId()
        else:
            view.plate_files[ann.getFile().getName()] = b"".join(ann.getFileInChunks())
        _note(view, ann)
    tables = [a for a in plate.listAnnotations(ns=BULK_ANNOTATIONS_NS)
              if a.getDescription() == table_description(pipeline)]
    assert len(tables) <= 1, f"{len(tables)} tables of {pipeline} on Plate:{plate_id}"
    for ann in tables:
        view.table = read_table(conn, ann.getFile().getId(), view.group_id)
        view.table_files["wells"] = ann.getFile().getId()
        _note(view, ann)
    for name, well, images in wells:
        for ann in well.listAnnotations(ns=ns):
            _note(view, ann)
            if hasattr(ann, "getFileInChunks"):
                view.well_files.setdefault(name, []).append(b"".join(ann.getFileInChunks()))
            else:
                view.well_pairs.setdefault(name, []).append([tuple(kv) for kv in ann.getValue()])
        for image in images.values():
            for ann in image.listAnnotations(ns=ns):
                _note(view, ann)
                view.image_files.setdefault(image.getId(), []).append(b"".join(ann.getFileInChunks()))
    return view


def read_table(conn, file_id: int, group_id: int) -> pd.DataFrame:
    import omero.model

    from openhcs_omero_lib.omero.plate import in_group

    opts = in_group(conn, group_id)
    table = conn.c.sf.sharedResources(opts).openTable(omero.model.OriginalFileI(file_id, False), opts)
    try:
        headers = table.getHeaders(opts)
        data = table.read(list(range(len(headers))), 0, table.getNumberOfRows(opts), opts)
        return pd.DataFrame({c.name: list(c.values) for c in data.columns})
    finally:
        table.close(opts)


def bundle_annotations(conn, plate_id: int) -> list[tuple[str, int]]:
    """Every annotation of this bundle (any pipeline) on the plate, its wells and fields."""
    from openhcs_omero_lib.omero.annotations import BULK_ANNOTATIONS_NS
    from openhcs_omero_lib.omero.sink import NS_PREFIX, TABLE_DESCRIPTION

    plate, wells = walk_plate(conn, plate_id)
    found = []
    for obj in [plate] + [w for _, w, _ in wells] + [i for _, _, images in wells for i in images.values()]:
        for ann in obj.listAnnotations():
            ns = ann.getNs() or ""
            if ns.startswith(NS_PREFIX + "/") or (
                    ns == BULK_ANNOTATIONS_NS and (ann.getDescription() or "").startswith(TABLE_DESCRIPTION + " ")):
                found.append((type(ann._obj).__name__.rstrip("I"), ann.getId()))
    return found


# ---- ground truth ----------------------------------------------------------------------------

def read_truth(folder: Path) -> dict[tuple[str, int, int], int]:
    """``ground_truth.csv`` read with the csv module (not the library's reader)."""
    with open(Path(folder) / "ground_truth.csv", newline="") as fh:
        return {(r["well"], int(r["site"]), int(r["timepoint"])): int(r["nuclei_count"])
                for r in csv.DictReader(fh)}


def assert_counts_match_truth(images: pd.DataFrame, truth: dict[tuple[str, int, int], int]) -> float:
    """Every field measured once, without error; at least 95% within 5% of the truth.
    Returns that fraction."""
    assert (images["error"] == "").all(), images.loc[images["error"] != "", "error"].tolist()
    keys = list(zip(images["well"], images["site"].astype(int), images["timepoint"].astype(int)))
    assert sorted(keys) == sorted(truth), "the results do not cover exactly the fields of ground_truth.csv"
    close = [abs(int(n) - truth[k]) <= 0.05 * truth[k] for k, n in zip(keys, images["nuclei_count"])]
    fraction = sum(close) / len(close)
    assert fraction >= 0.95, f"only {fraction:.0%} of fields within 5% of ground truth"
    return fraction


# ---- the scenarios -----------------------------------------------------------------------------

def upload_reads_back_identically(target: Target, folder: Path) -> int:
    """A plate put on the server reads back, through the adapter, as the folder reads."""
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.omero.plate import load_plate
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    plate_id = target.import_plate(folder)
    with connected(target) as conn, ImageXpressSource(folder) as local:
        plate = load_plate(conn, plate_id, cache=None)
        ours, theirs = plate.layout, local.layout
        for attr in ("name", "rows", "columns", "sites", "channels", "z_planes", "timepoints", "plane_shape",
                     "dtype", "pixel_size_um"):
            assert getattr(ours, attr) == getattr(theirs, attr), (attr, getattr(ours, attr), getattr(theirs, attr))
        assert ours.well_names == theirs.well_names
        assert sorted(ours.image_ids) == sorted((w, s, None) for w in theirs.well_names
                                                for s in range(1, theirs.sites + 1))
        with OmeroPixelSource(conn, plate) as remote:
            for unit in theirs.units():
                for channel in theirs.channels:
                    for z in range(1, theirs.z_planes + 1):
                        args = (unit.well, unit.site, channel.index, z, unit.timepoint)
                        a, b = remote.read_plane(*args), local.read_plane(*args)
                        assert a.dtype == b.dtype and np.array_equal(a, b), f"plane {args} differs"
    return plate_id


def run_and_check_against_truth(target: Target, folder: Path, workers: int = 2) -> PlateView:
    """Run nuclei_count through the script service; what it attached (files, table,
    key-value pairs) agrees with itself and with the plate's ground truth."""
    from openhcs_omero_lib.omero import jobs

    plate_id = target.import_plate(folder)
    script = target.script_id()
    with connected(target) as conn:
        inputs = jobs.run_inputs([plate_id], workers=workers, attach=("plate", "wells"))
        inputs.update(pipeline_inputs(target, conn, "nuclei_count"))
        state, outputs = run_job(conn, script, inputs)
        assert state.outcome == "finished", (state, outputs)
        view = read_plate(conn, plate_id, "nuclei_count")
    target.seen_results += view.ids.get("FileAnnotation", ())
    assert sorted(view.plate_files) == ["nuclei_count_heatmap.png", "nuclei_count_images.csv",
                                        "nuclei_count_results.json", "nuclei_count_wells.csv"]
    assert view.plate_files["nuclei_count_heatmap.png"].startswith(b"\x89PNG\r\n")
    images = view.csv("nuclei_count_images.csv")
    truth = read_truth(folder)
    assert_counts_match_truth(images, truth)
    # Each field is its own image (field numbers are indices in the well on both sides).
    assert sorted(zip(images["well"], images["site"], images["image_id"].astype(int))) == \
        sorted((well, site, iid) for (well, site, _), iid in view.images.items())
    # The tables hold the same numbers, against the plate's own well and image IDs:
    # one row per well in the bulk-annotation table, one per field in the other.
    wells_csv = view.csv("nuclei_count_wells.csv")
    table = view.table
    assert table is not None, "no OMERO.table on the plate"
    assert sorted(zip(table["Well"], table["nuclei_count"])) == \
        sorted(zip(wells_csv["well_id"], wells_csv["nuclei_count"]))
    assert sorted(table["Well"]) == sorted(view.wells.values())
    fields = view.field_table
    assert fields is not None, "no field-level OMERO.table on the plate"
    assert sorted(zip(fields["Image"], fields["nuclei_count"])) == \
        sorted(zip(images["image_id"], images["nuclei_count"].astype(float)))
    # Each well: its fields' CSV and key-value pairs with the well's total.
    totals = images.groupby("well")["nuclei_count"].sum()
    for well in view.wells:
        assert len(view.well_files.get(well, [])) == 1, well
        assert len(view.well_pairs.get(well, [])) == 1, well
        pairs = dict(view.well_pairs[well][0])
        assert pairs["pipeline"] == "nuclei_count"
        assert int(pairs["nuclei_count"]) == totals[well]
    # What the script says it attached is exactly what a client finds.
    reported = {(kind, i) for kind, ids in (outputs.get("Attached_IDs") or {}).items() for i in ids}
    assert reported == view.all_ids()
    assert outputs.get("File_Annotation") in view.ids["FileAnnotation"]
    assert f"plate {plate_id}" in outputs["Message"]
    return view


def rerun_is_idempotent(target: Target, folder: Path, workdir: Path) -> tuple[PlateView, PlateView]:
    """Launch a spec file with the command, then run it again through the API: the
    second run replaces the first run's results with an identical set, and the spec
    is uploaded once."""
    from omero.rtypes import unwrap

    from openhcs_omero_lib.omero import jobs
    from openhcs_omero_lib.omero import queries as Q
    from openhcs_omero_lib.omero.plate import all_groups, query_params

    name = "nuclei_rerun"
    spec = unique_spec(workdir, name)
    plate_id = target.import_plate(folder)
    script = target.script_id()
    with connected(target) as conn:
        uploaded = unwrap(pipeline_inputs(target, conn, str(spec))["Pipeline_File_Annotation"])
    code = launch(target, "--plate", str(plate_id), "--pipeline", str(spec), "--workers", "1",
                  "--script", str(script))
    assert code == 0, f"launch exited with {code}"
    with connected(target) as conn:
        first = read_plate(conn, plate_id, name)
        inputs = jobs.run_inputs([plate_id], workers=1)
        again = pipeline_inputs(target, conn, str(spec))
        assert unwrap(again["Pipeline_File_Annotation"]) == uploaded, "the same spec was uploaded twice"
        inputs.update(again)
        state, outputs = run_job(conn, script, inputs)
        assert state.outcome == "finished", (state, outputs)
        second = read_plate(conn, plate_id, name)
        copies = conn.getQueryService().findAllByQuery(
            Q.PIPELINE_UPLOAD, query_params(ns=jobs.PIPELINE_NS, description=_sha256(spec),
                                            owner=conn.getUserId()), all_groups(conn))
    target.seen_results += [*first.ids.get("FileAnnotation", ()), *second.ids.get("FileAnnotation", ())]
    assert [unwrap(c.getId()) for c in copies] == [uploaded]
    assert first.all_ids() and not first.all_ids() & second.all_ids(), "the first run's results are still linked"
    assert {k: len(v) for k, v in first.ids.items()} == {k: len(v) for k, v in second.ids.items()}
    assert f"replaced {len(first.all_ids())}" in outputs["Message"], outputs["Message"]
    measured = [c for c in first.csv(f"{name}_images.csv").columns if c.startswith("nuclei_")]
    for csv_name in (f"{name}_images.csv", f"{name}_wells.csv"):
        pd.testing.assert_frame_equal(first.csv(csv_name)[["well", *measured]],
                                      second.csv(csv_name)[["well", *measured]])
    pd.testing.assert_frame_equal(first.table, second.table)
    pd.testing.assert_frame_equal(first.field_table, second.field_table)
    assert first.well_pairs == second.well_pairs
    return first, second


def describe_and_delete(target: Target, folder: Path) -> None:
    """Describe_Plate reports the plate as the folder describes it; Delete_HCS_Results
    removes every result annotation (plate, wells, fields) and nothing else."""
    from omero.rtypes import rlist, rlong, rstring

    from openhcs_omero_lib.omero import annotations as A
    from openhcs_omero_lib.omero import jobs
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    plate_id = target.import_plate(folder)
    selection = {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate_id)])}
    with connected(target) as conn, ImageXpressSource(folder) as local:
        inputs = jobs.run_inputs([plate_id], workers=1, attach=("plate", "wells", "images"))
        inputs.update(pipeline_inputs(target, conn, "nuclei_count"))
        state, _ = run_job(conn, target.script_id(RUN), inputs)
        assert state.outcome == "finished", state
        view = read_plate(conn, plate_id, "nuclei_count")
        target.seen_results += view.ids.get("FileAnnotation", ())
        assert sorted(view.image_files) == sorted(view.images.values()), "not every field got its CSV"

        group = view.group_id
        files = A.upload_files(conn, [("notes.txt", b"a user's own file\n", "text/plain")], group)
        keep = A.file_annotations(conn, files, KEEP_NS, group)[0]
        target.track(conn, "FileAnnotation", [keep.getId().getValue()])
        A.link(conn, "Plate", [(plate_id, keep)], group)

        state, outputs = run_job(conn, target.script_id(DESCRIBE), dict(selection))
        assert state.outcome == "finished", (state, outputs)
        assert f"plate {plate_id}: {local.layout.describe()};" in outputs["Message"], outputs["Message"]

        ours = bundle_annotations(conn, plate_id)
        assert set(ours) == view.all_ids()
        state, outputs = run_job(conn, target.script_id(DELETE), dict(selection))
        assert state.outcome == "finished", (state, outputs)
        assert outputs["Message"] == f"removed {len(ours)} openhcs-omero annotations"
        assert bundle_annotations(conn, plate_id) == []
        left = [a.getId() for a in conn.getObject("Plate", plate_id).listAnnotations(ns=KEEP_NS)]
        assert left == [keep.getId().getValue()], "Delete_HCS_Results removed an annotation that is not its own"


def cancel_stops_and_attaches_nothing(target: Target, folder: Path, workdir: Path) -> None:
    """A job cancelled while it computes ends as cancelled and attaches nothing."""
    import time

    from openhcs_omero_lib.omero import jobs

    spec = unique_spec(workdir, "slow_count", SLOW_SPEC)
    plate_id = target.import_plate(folder)
    script = target.script_id()
    with connected(target) as conn:
        inputs = jobs.run_inputs([plate_id], workers=1)
        inputs.update(pipeline_inputs(target, conn, str(spec)))
        job_id, proc = jobs.start_job(conn, script, inputs)
        try:
            with jobs.JobWatch(conn, job_id) as watch:
                deadline = time.monotonic() + JOB_TIMEOUT
                state = watch.state()
                while state.progress is None and state.outcome is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                    state = watch.state()
                assert state.outcome is None, f"the job ended before it could be cancelled: {state}"
                proc.cancel()
                state = jobs.wait_for_outcome(watch, JOB_TIMEOUT, interval=0.2)
        finally:
            jobs.close_job(proc)
        assert state.outcome == "cancelled", state
        assert "nothing attached" in state.summary, state.summary
        assert bundle_annotations(conn, plate_id) == []


def _results_once(conn, script_id: int, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run a script and read its results as OMERO.web does: once, when the process has
    ended (``proc.getResults(0)`` answers only once)."""
    import time

    from openhcs_omero_lib.omero import jobs

    _, proc = jobs.start_job(conn, script_id, inputs)
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"the script still runs after {JOB_TIMEOUT:.0f} s"
            time.sleep(0.2)
        return proc.getResults(0, conn.SERVICE_OPTS)
    finally:
        proc.close(False)


def clients_run_the_script_and_read_its_outputs(target: Target, folder: Path) -> None:
    """Run_HCS_Pipeline as OMERO.web and OMERO.insight run it, from the parameters the
    server gives their dialogs: OMERO.web's Activities panel reads the results (the
    File_Annotation with its file), and what a user ticks in either dialog is what the
    script attaches."""
    import omero_clients as clients
    from openhcs_omero_lib.omero.sink import results_namespace

    plate_id = target.import_plate(folder)
    script = target.script_id()
    with connected(target) as conn:
        params = conn.getScriptService().getParams(script)
        form = clients.web_form(clients.web_script_ui(params, {"Plate": str(plate_id)}),
                                {"Workers": 1, "Attach_To": "Plate"})
        shown = clients.web_activities(_results_once(conn, script, clients.web_inputs(params, form)))
        view = read_plate(conn, plate_id, "nuclei_count")
        target.seen_results += view.ids.get("FileAnnotation", ())
        assert f"plate {plate_id}" in shown["Message"], shown
        on_plate = conn.getObject("Plate", plate_id).listAnnotations(ns=results_namespace("nuclei_count"))
        wells_csv = [a.getId() for a in on_plate if a.getFile().getName() == "nuclei_count_wells.csv"]
        assert shown["results"]["File_Annotation"] == {"id": wells_csv[0], "type": "FileAnnotation",
                                                       "name": "nuclei_count_wells.csv"}
        assert sorted(view.plate_files) == ["nuclei_count_heatmap.png", "nuclei_count_images.csv",
                                            "nuclei_count_results.json", "nuclei_count_wells.csv"]
        assert view.table is not None and not view.well_pairs

        # OMERO.insight with CSV and JSON unticked: the table and key-value pairs still come
        chosen = {"Data_Type": "Plate", "IDs": [plate_id], "Workers": 1, "CSV": False, "JSON": False}
        shown = clients.web_activities(_results_once(conn, script, clients.insight_inputs(params, chosen)))
        view = read_plate(conn, plate_id, "nuclei_count")
        target.seen_results += view.ids.get("FileAnnotation", ())
        assert "File_Annotation" not in shown["results"], shown
        assert list(view.plate_files) == ["nuclei_count_heatmap.png"] and not view.well_files, \
            sorted(view.plate_files)
        assert view.table is not None and sorted(view.well_pairs) == sorted(view.wells)


def results_by_owner(conn, plate_id: int, pipeline: str) -> dict[int, set[tuple[str, int]]]:
    """Owner ID -> ``(class, ID)`` of the annotations ``pipeline`` attached to the plate,
    its wells and fields (its table included), whoever attached them."""
    from openhcs_omero_lib.omero.annotations import BULK_ANNOTATIONS_NS
    from openhcs_omero_lib.omero.sink import results_namespace, table_description

    plate, wells = walk_plate(conn, plate_id)
    found: dict[int, set[tuple[str, int]]] = {}
    for obj in [plate] + [w for _, w, _ in wells] + [i for _, _, images in wells for i in images.values()]:
        for ann in obj.listAnnotations():
            ns = ann.getNs() or ""
            if ns == results_namespace(pipeline) or (
                    ns == BULK_ANNOTATIONS_NS and ann.getDescription() == table_description(pipeline)):
                owner = ann._obj.getDetails().getOwner().getId().getValue()
                found.setdefault(owner, set()).add((type(ann._obj).__name__.rstrip("I"), ann.getId()))
    return found


def colleagues_results_stay(target: Target, colleague: Target, folder: Path) -> None:
    """Two users of a read-annotate (or read-write) group run the pipeline on one plate.
    A re-run by one replaces only their own results and says the other's are there;
    Delete_HCS_Results removes only its user's results and says whose it left."""
    import pytest
    from omero.rtypes import rlist, rlong, rstring

    from openhcs_omero_lib.omero import jobs
    from openhcs_omero_lib.omero.script_support import delete_results_script

    plate_id = target.import_plate(folder)
    selection = {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate_id)])}
    with connected(target) as conn, connected(colleague) as other:
        permissions = conn.getObject("Plate", plate_id).getDetails().getPermissions()
        if not permissions.isGroupAnnotate():
            pytest.skip(f"the plate's group is {permissions}: members cannot annotate each other's plates")
        me, them, their_name = conn.getUserId(), other.getUserId(), other.getEventContext().userName
        inputs = jobs.run_inputs([plate_id], workers=1, attach=("plate", "wells", "images"))
        inputs.update(pipeline_inputs(target, conn, "nuclei_count"))
        try:
            for who in (conn, other):
                state, outputs = run_job(who, target.script_id(RUN), dict(inputs))
                assert state.outcome == "finished", (state, outputs)
            before = results_by_owner(conn, plate_id, "nuclei_count")
            assert before.get(me) and before.get(them), before
            state, outputs = run_job(conn, target.script_id(RUN), dict(inputs))
            assert state.outcome == "finished", (state, outputs)
            after = results_by_owner(conn, plate_id, "nuclei_count")
            target.seen_results += [i for kind, i in after[me] if kind == "FileAnnotation"]
            assert after[them] == before[them], "a re-run removed a colleague's results"
            assert after[me] and not after[me] & before[me], "the user's earlier results are still linked"
            assert f"replaced {len(before[me])}" in outputs["Message"], outputs["Message"]
            assert f"other users' results of this pipeline stay ({len(before[them])} of {their_name})" \
                in outputs["Message"], outputs["Message"]
            state, outputs = run_job(conn, target.script_id(DELETE), dict(selection))
            assert state.outcome == "finished", (state, outputs)
            assert outputs["Message"] == (f"removed {len(after[me])} openhcs-omero annotations; "
                                          f"left other users' ({len(before[them])} of {their_name})")
            assert results_by_owner(conn, plate_id, "nuclei_count") == {them: before[them]}
        finally:
            delete_results_script(other, {"Data_Type": "Plate", "IDs": [plate_id]})
        assert results_by_owner(conn, plate_id, "nuclei_count") == {}


def web_well_rows(conn, plate_id: int, well_id: int) -> tuple[int, list[str], list[list[Any]]]:
    """What OMERO.web shows for a well of a plate (omero-web webgateway/views.py,
    object_table_query of ``Plate.wells`` with ``Well-<id>``): of the plate's file
    annotations in the bulk-annotations namespace or with the ``OMERO.tables``
    mimetype, the newest (highest file ID) whose ``(Well==<id>)`` query succeeds;
    its file ID, column names and matching rows."""
    import omero.model

    from openhcs_omero_lib.omero.annotations import BULK_ANNOTATIONS_NS
    from openhcs_omero_lib.omero.plate import all_groups

    plate = conn.getObject("Plate", plate_id)
    files = sorted({a.getFile().getId() for a in plate.listAnnotations() if hasattr(a, "getFile") and
                    (a.getNs() == BULK_ANNOTATIONS_NS or a.getFile().getMimetype() == "OMERO.tables")}, reverse=True)
    opts = all_groups(conn)
    for file_id in files:
        table = conn.c.sf.sharedResources(opts).openTable(omero.model.OriginalFileI(file_id, False), opts)
        try:
            names = [c.name for c in table.getHeaders(opts)]
            column = "well" if "Well" not in names and "well" in names else "Well"
            try:
                hits = table.getWhereList(f"({column}=={well_id})", None, 0, table.getNumberOfRows(opts), 1, opts)
            except omero.ServerError:
                continue
            data = table.slice(list(range(len(names))), hits, opts) if hits else None
            rows = [[c.values[i] for c in data.columns] for i in range(len(hits))] if data else []
            return file_id, names, rows
        finally:
            table.close(opts)
    raise AssertionError(f"OMERO.web finds no table for Well:{well_id} on Plate:{plate_id}")


def time_lapse_runs_and_gaps(target: Target, runs: list[tuple[str, Path]]) -> PlateView:
    """A plate with z stacks, several timepoints, two acquisition runs and a missing
    field in two wells (gaps in their lists of well samples): every output holds each
    run on its own, with the fields' own numbers, and agrees with each run's ground
    truth; the bulk-annotation table holds one row per well and run, which is what
    OMERO.web shows for a well. A second run restricted to one run replaces the first."""
    import json

    from omero.rtypes import rlist, rlong

    from openhcs_omero_lib.omero import jobs
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    with ImageXpressSource(runs[0][1]) as source:
        layout = source.layout
    assert len(runs) >= 2 and layout.sites >= 2 and layout.timepoints >= 2 and layout.z_planes >= 2, layout
    wells = layout.well_names
    missing = {(runs[0][0], wells[0], 2), (runs[-1][0], wells[1], 1)}
    plate_id = target.import_plate(runs, missing=missing)
    script = target.script_id()
    with connected(target) as conn:
        inputs = jobs.run_inputs([plate_id], workers=2, attach=("plate", "wells", "images"))
        inputs.update(pipeline_inputs(target, conn, "nuclei_count"))
        state, outputs = run_job(conn, script, inputs)
        assert state.outcome == "finished", (state, outputs)
        view = read_plate(conn, plate_id, "nuclei_count")
        web = {well: web_well_rows(conn, plate_id, wid) for well, wid in view.wells.items()}
    target.seen_results += view.ids.get("FileAnnotation", ())
    run_ids = {name: rid for rid, name in view.runs.items()}
    assert sorted(run_ids) == sorted(name for name, _ in runs), view.runs
    present = {(w, s, run_ids[r]) for r, _ in runs for w in wells for s in range(1, layout.sites + 1)
               if (r, w, s) not in missing}
    # The client's walk of the plate numbers fields by their index: gaps keep the numbers.
    assert set(view.images) == present

    images = view.csv("nuclei_count_images.csv")
    keys = list(zip(images["well"], images["site"], images["run_id"]))
    assert sorted(set(keys)) == sorted(present), "fields measured are not the plate's fields"
    assert len(images) == len(present) * layout.timepoints
    assert images["site"].max() == layout.sites, "runs were merged into extra sites"
    assert all(view.runs[rid] == name for rid, name in zip(images["run_id"], images["run"]))
    assert [view.images[k] for k in keys] == list(images["image_id"])
    for name, folder in runs:  # each run measured on its own pixels
        own = images[images["run_id"] == run_ids[name]]
        truth = {k: n for k, n in read_truth(folder).items() if (name, k[0], k[1]) not in missing}
        assert_counts_match_truth(own, truth)

    wells_csv = view.csv("nuclei_count_wells.csv")
    assert len(wells_csv) == len(runs) * len(wells) * layout.timepoints
    fields_of = {(w, rid): sum((w, s, rid) in present for s in range(1, layout.sites + 1))
                 for w in wells for rid in run_ids.values()}
    for row in wells_csv.itertuples():
        assert row.sites == fields_of[(row.well, row.run_id)] and row.sites_failed == 0
    expected = {(r.well_id, r.run_id, r.timepoint): r.nuclei_count for r in wells_csv.itertuples()}

    # One row per well and run in the table viewers look wells up in, a column per timepoint.
    table = view.table
    assert len(table) == len(wells) * len(runs)
    assert sorted(zip(table["Well"], table["run_id"])) == sorted((view.wells[w], rid) for w, rid in fields_of)
    for row in table.to_dict("records"):
        for t in range(1, layout.timepoints + 1):
            assert row[f"nuclei_count_t{t}"] == expected[(row["Well"], row["run_id"], t)]
    for well, (file_id, names, rows) in web.items():
        assert file_id == view.table_files["wells"], f"OMERO.web shows another table for {well}"
        assert len(rows) == len(runs) and {r[names.index("Well")] for r in rows} == {view.wells[well]}
    fields = view.field_table
    assert len(fields) == len(images)
    assert sorted(zip(fields["Image"], fields["timepoint"], fields["nuclei_count"])) == \
        sorted(zip(images["image_id"], images["timepoint"], images["nuclei_count"].astype(float)))

    for well in wells:  # key-value pairs: one set per run
        assert len(view.well_pairs[well]) == len(runs)
        for pairs in map(dict, view.well_pairs[well]):
            rid = int(pairs["run_id"])
            assert pairs["run"] == view.runs[rid]
            for t in range(1, layout.timepoints + 1):
                assert int(pairs[f"nuclei_count_t{t}"]) == expected[(view.wells[well], rid, t)]
    for iid in view.images.values():  # each field's CSV holds its timepoints
        [csv_file] = view.image_files[iid]
        assert len(pd.read_csv(io.BytesIO(csv_file))) == layout.timepoints
    summary = json.loads(view.plate_files["nuclei_count_results.json"])
    assert {r["name"] for r in summary["plate"]["runs"]} == set(run_ids)
    assert summary["plate"]["fields"] == len(present)

    # Only the last run, chosen by its ID: its rows replace every earlier result.
    last = run_ids[runs[-1][0]]
    with connected(target) as conn:
        inputs = jobs.run_inputs([plate_id], workers=1, attach=("plate", "wells", "images"))
        inputs.update(pipeline_inputs(target, conn, "nuclei_count"))
        inputs["Runs"] = rlist([rlong(last)])
        state, outputs = run_job(conn, script, inputs)
        assert state.outcome == "finished", (state, outputs)
        again = read_plate(conn, plate_id, "nuclei_count")
    target.seen_results += again.ids.get("FileAnnotation", ())
    assert not view.all_ids() & again.all_ids()
    images = again.csv("nuclei_count_images.csv")
    assert set(images["run_id"]) == {last}
    assert len(images) == sum(rid == last for _, _, rid in present) * layout.timepoints
    assert set(again.table["run_id"]) == {last} and len(again.table) == len(wells)
    return view


def no_wait_job_outlives_its_launcher(target: Target, folder: Path, timeout: float = JOB_TIMEOUT) -> int:
    """``launch --no-wait`` returns at once and closes its session; the job it started
    goes on and attaches its results. Returns the job's ID."""
    import contextlib

    from openhcs_omero_lib.omero import jobs

    plate_id = target.import_plate(folder)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert launch(target, "--plate", str(plate_id), "--workers", "1", "--no-wait") == 0
    job_id = int(printed.getvalue().split()[0])
    with connected(target) as conn, jobs.JobWatch(conn, job_id) as watch:
        state = jobs.wait_for_outcome(watch, timeout, interval=0.2)
        assert state.outcome == "finished", state
        assert state.summary.startswith("nuclei_count on 1 plate"), state.summary
        view = read_plate(conn, plate_id, "nuclei_count")
        target.seen_results += view.ids.get("FileAnnotation", ())
        assert view.plate_files, "the job attached nothing to the plate"
    return job_id


def results_are_read_once(target: Target, folder: Path) -> None:
    """``ScriptProcess.getResults`` refuses to wait more than 5 s and answers once;
    polling the process is what sets the job's final status."""
    import omero
    from omero.rtypes import rlist, rlong, rstring

    from openhcs_omero_lib.omero import jobs

    plate_id = target.import_plate(folder)
    script = target.script_id(DESCRIBE)
    with connected(target) as conn:
        job_id, proc = jobs.start_job(conn, script, {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate_id)])})
        try:
            try:
                proc.getResults(6)
                raise AssertionError("getResults(6) was accepted")
            except omero.ApiUsageException as exc:
                assert "5 seconds" in exc.message, exc.message
            outputs = jobs.results_of(proc, timeout=JOB_TIMEOUT)
            assert outputs["Message"].startswith(f"plate {plate_id}: "), outputs
            try:
                proc.getResults(0)
                raise AssertionError("getResults answered twice")
            except omero.ApiUsageException:
                pass
            with jobs.JobWatch(conn, job_id) as watch:
                assert watch.state().status == "Finished"
        finally:
            jobs.close_job(proc)


def read_rois(conn, image_ids, ns: str) -> dict[int, list]:
    """Each image's ROIs of namespace ``ns`` (their description), as a client reads them."""
    opts = conn.SERVICE_OPTS.copy()
    opts.setOmeroGroup(-1)
    service = conn.getRoiService()
    return {iid: [r for r in service.findByImage(iid, None, opts).rois
                  if r.getDescription() is not None and r.getDescription().getValue() == ns]
            for iid in image_ids}


def pictures_once_per_run(target: Target, folder: Path) -> None:
    """With Save_ROIs: the heat map on the plate and, on each field's image, one ROI
    per nucleus counted there, read back as a client reads them; a second run
    replaces both."""
    from omero.rtypes import rbool

    from openhcs_omero_lib.omero import jobs
    from openhcs_omero_lib.omero.sink import results_namespace

    ns = results_namespace("nuclei_count")
    plate_id = target.import_plate(folder)
    script = target.script_id()
    runs = []
    with connected(target) as conn:
        for _ in range(2):
            inputs = jobs.run_inputs([plate_id], workers=1, attach=("plate",))
            inputs.update(pipeline_inputs(target, conn, "nuclei_count"))
            inputs["Save_ROIs"] = rbool(True)
            state, outputs = run_job(conn, script, inputs)
            assert state.outcome == "finished", (state, outputs)
            view = read_plate(conn, plate_id, "nuclei_count")
            target.seen_results += view.ids.get("FileAnnotation", ())
            names = [a.getFile().getName() for a in conn.getObject("Plate", plate_id).listAnnotations(ns=ns)]
            assert names.count("nuclei_count_heatmap.png") == 1, names
            assert view.plate_files["nuclei_count_heatmap.png"].startswith(b"\x89PNG\r\n")
            images = view.csv("nuclei_count_images.csv")
            counts = dict(zip(images["image_id"].astype(int), images["nuclei_count"].astype(int)))
            rois = read_rois(conn, sorted(view.images.values()), ns)
            assert {iid: len(found) for iid, found in rois.items()} == counts
            assert all(s.getTheT().getValue() == 0 for found in rois.values() for r in found for s in r.copyShapes())
            assert f"{sum(counts.values())} ROIs on {len(counts)} images" in outputs["Message"], outputs["Message"]
            runs.append({r.getId().getValue() for found in rois.values() for r in found})
    assert runs[0] and runs[1] and runs[0].isdisjoint(runs[1])


def _sha256(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


SCENARIOS = (upload_reads_back_identically, run_and_check_against_truth, rerun_is_idempotent,
             describe_and_delete, cancel_stops_and_attaches_nothing, clients_run_the_script_and_read_its_outputs,
             colleagues_results_stay, time_lapse_runs_and_gaps, no_wait_job_outlives_its_launcher,
             results_are_read_once, pictures_once_per_run)


def pixel_access_reads_the_same(target: Target, folder: Path) -> None:
    """A plate put on the server through the API has no original files: with
    Pixel_Access auto the script says why it read through RawPixelsStore (having
    asked the server for the plate's fileset, a query the server must accept), and
    attaches what Pixel_Access server attaches."""
    from openhcs_omero_lib.omero import jobs

    plate_id = target.import_plate(folder)
    script = target.script_id()
    counts, messages = {}, {}
    with connected(target) as conn:
        for access in ("server", "auto"):
            inputs = jobs.run_inputs([plate_id], workers=1, attach=("plate",), pixel_access=access)
            inputs.update(pipeline_inputs(target, conn, "nuclei_count"))
            state, outputs = run_job(conn, script, inputs)
            assert state.outcome == "finished", (state, outputs)
            messages[access] = outputs["Message"]
            view = read_plate(conn, plate_id, "nuclei_count")
            target.seen_results += view.ids.get("FileAnnotation", ())
            images = view.csv("nuclei_count_images.csv")
            counts[access] = dict(zip(images["image_id"].astype(int), images["nuclei_count"].astype(int)))
    assert "pixels read" not in messages["server"], messages["server"]
    why = [part for part in messages["auto"].split("; ") if part.startswith("pixels read")]
    assert len(why) == 1, messages["auto"]
    # (the server's Processor may run where the managed repository is not)
    assert why[0] == "pixels read through RawPixelsStore: its images have no original files in the repository" \
        or why[0].endswith("is not on this machine"), messages["auto"]
    assert counts["auto"] == counts["server"] and counts["server"]
