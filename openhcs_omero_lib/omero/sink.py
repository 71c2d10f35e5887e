"""Storing a run's results on the plate, its wells and its images."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from openhcs_omero_lib.omero import annotations as A
from openhcs_omero_lib.omero import rois as R
from openhcs_omero_lib.omero.plate import OmeroPlate
from openhcs_omero_lib.plates.layout import PlateLayout
from openhcs_omero_lib.results.sinks import ResultSink
from openhcs_omero_lib.results.tables import (
    IMAGES_CSV,
    RESULTS_JSON,
    RUN_COLUMNS,
    WELLS_CSV,
    PlateResults,
    measurement_columns,
)

NS_PREFIX = "openhcs.omero/results"
TABLE_DESCRIPTION = "openhcs-omero"
ATTACH_CHOICES = ("plate", "wells", "images")
OUTPUT_CHOICES = ("csv", "json", "table", "key_values")
TABLE_COLUMN_LIMIT = 500
"""Columns a table may have: OMERO.tables (PyTables) copes with up to 512."""


def table_description(pipeline: str) -> str:
    """How this bundle marks its bulk-annotation table of one pipeline."""
    return f"{TABLE_DESCRIPTION} {pipeline}"


def attaches_anything(attach_to: tuple[str, ...], outputs: tuple[str, ...]) -> bool:
    """Whether a choice of targets and outputs would attach at least one annotation."""
    made = {"plate": {"csv", "json"}, "wells": {"csv", "key_values"}, "images": {"csv"}}
    return "table" in outputs or any(made[a] & set(outputs) for a in attach_to)


def results_namespace(pipeline: str) -> str:
    """Each pipeline's results have their own namespace; a re-run replaces its own."""
    return f"{NS_PREFIX}/{pipeline}"


@dataclass
class WriteReport:
    created: dict[str, list[int]] = field(default_factory=dict)
    replaced: int = 0
    not_replaced: int = 0
    replace_error: str = ""
    others: dict[str, int] = field(default_factory=dict)
    """other users' annotations of the same pipeline, left in place: user name -> count"""
    wells_csv_annotation: Any = None
    rois: Any = None
    """The :class:`~.rois.RoiPlan` saved, when ROIs were asked for"""
    heatmap_note: str = ""
    """Why a heat map that was asked for is not there"""

    def add(self, kind: str, anns: list[Any]) -> None:
        self.created.setdefault(kind, []).extend(a.getId().getValue() for a in anns)

    def count(self) -> int:
        """Annotations created (ROIs are in ``created["Roi"]``, not counted here)."""
        return sum(len(v) for k, v in self.created.items() if k != "Roi")


class OmeroResultSink(ResultSink):
    """CSV/JSON FileAnnotations, per-well key-value pairs and an OMERO.table, in the
    plate's group. New results are saved first, linked to the plate, wells and images
    all at once, and earlier ones of the same pipeline removed after; if saving fails,
    what was saved is removed and the earlier results stay as they were."""

    def __init__(self, conn, plate: OmeroPlate, pipeline: str, *,
                 attach_to: tuple[str, ...] = ("plate", "wells"),
                 outputs: tuple[str, ...] = OUTPUT_CHOICES, replace: bool = True,
                 heatmap: bool = True, heatmap_measurement: str | None = None, rois: R.RoiChoice | None = None):
        unknown = set(attach_to) - set(ATTACH_CHOICES) | set(outputs) - set(OUTPUT_CHOICES)
        if unknown:
            raise ValueError(f"unknown choices: {sorted(unknown)}")
        self.conn = conn
        self.plate = plate
        self.pipeline = pipeline
        self.ns = results_namespace(pipeline)
        self.attach_to = attach_to
        self.outputs = outputs
        self.replace = replace
        self.heatmap = heatmap
        self.heatmap_measurement = heatmap_measurement
        self.rois = rois
        self.report = WriteReport()

    # ---- what exists -------------------------------------------------------------------------

    def _targets(self) -> dict[str, list[int]]:
        layout = self.plate.layout
        targets: dict[str, list[int]] = {"Plate": [self.plate.id]}
        targets["Well"] = [w.id for w in layout.wells if w.id is not None]
        # every image of the plate: results on runs left out of this run are replaced too
        targets["Image"] = list(self.plate.all_image_ids) or sorted(set(layout.image_ids.values()))
        return targets

    def existing(self) -> list[tuple[str, int]]:
        """The current user's annotations of this pipeline's namespace on the plate,
        wells, images, and this bundle's bulk-annotation table on the plate: what a
        re-run replaces. Other users' stay; how many is noted in ``report.others``."""
        found = []
        for kind, ids in self._targets().items():
            found += A.find_owned_annotations(self.conn, kind, ids, self.ns)
        own_table = table_description(self.pipeline)
        found += A.find_owned_annotations(self.conn, "Plate", [self.plate.id], A.BULK_ANNOTATIONS_NS,
                                          description=lambda d: d == own_table)
        found += R.find_rois(self.conn, self._targets()["Image"], self.ns)
        mine, self.report.others = A.split_by_owner(self.conn, found)
        return mine

    # ---- writing -----------------------------------------------------------------------------

    def write(self, results: PlateResults) -> list[str]:
        old = self.existing() if self.replace else []
        try:
            # Files and annotations first, linked to nothing; then every link in one
            # transaction, so that the plate never shows half a set, even if the
            # process is killed meanwhile. (ROIs name their image when saved: they
            # come in batches before the links.)
            with A.deferred_links() as links:
                self._write_new(results)
                self._write_pictures(results)
            A.save_links(self.conn, links, self.plate.group_id)
        except BaseException:
            self._rollback()
            raise
        if old:
            try:
                A.delete_objects(self.conn, A.group_targets(old), self.plate.group_id)
                self.report.replaced = len(old)
            except Exception as exc:  # the new set is complete; say what is left over
                self.report.not_replaced = len(old)
                self.report.replace_error = getattr(exc, "message", None) or str(exc)
        return [f"{kind}:{i}" for kind, ids in self.report.created.items() for i in ids]

    def _rollback(self) -> None:
        if self.report.created:
            try:
                A.delete_objects(self.conn, dict(self.report.created), self.plate.group_id)
            finally:
                self.report.created.clear()

    def _annotate(self, ofiles: list[Any], ns: str, description: str = "") -> list[Any]:
        """FileAnnotations for saved files. Until they exist the files are recorded on
        their own, so that a failure removes them; then the annotations own them."""
        self.report.add("OriginalFile", ofiles)
        anns = A.file_annotations(self.conn, ofiles, ns, self.plate.group_id, description)
        owned = {o.getId().getValue() for o in ofiles}
        self.report.created["OriginalFile"] = [i for i in self.report.created["OriginalFile"] if i not in owned]
        self.report.add("FileAnnotation", anns)
        return anns

    def _files(self, items: list[tuple[str, bytes, str]]) -> list[Any]:
        return self._annotate(A.upload_files(self.conn, items, self.plate.group_id), self.ns)

    def _write_new(self, results: PlateResults) -> None:
        gid = self.plate.group_id
        files = results.files()
        name = self.pipeline
        layout = self.plate.layout
        if "plate" in self.attach_to:
            items = []
            if "csv" in self.outputs:
                items += [(f"{name}_{WELLS_CSV}", files[WELLS_CSV], "text/csv"),
                          (f"{name}_{IMAGES_CSV}", files[IMAGES_CSV], "text/csv")]
            if "json" in self.outputs:
                items.append((f"{name}_{RESULTS_JSON}", files[RESULTS_JSON], "application/json"))
            anns = self._files(items)
            A.link(self.conn, "Plate", [(self.plate.id, a) for a in anns], gid)
            if "csv" in self.outputs:
                self.report.wells_csv_annotation = anns[0]
        per_well = well_rows(results, layout) if {"table", "key_values"} & set(self.outputs) else None
        if "table" in self.outputs:
            # The field-level table first: OMERO.web shows the newest table (highest file
            # ID) it can query for a well, which must be the one-row-per-well table.
            fields_file = A.create_table(self.conn, f"{name}_{layout.name}_fields.omero.h5",
                                         field_table(results, layout), gid)
            fields_ann = self._annotate([fields_file], self.ns)[0]
            # One row per well and run, ``Well`` a WellColumn: OMERO.web queries it as
            # ``Well-<id>`` and shows every matching row, OMERO.parade indexes it by well.
            wells_file = A.create_table(self.conn, f"{name}_{layout.name}_wells.omero.h5", per_well, gid)
            wells_ann = self._annotate([wells_file], A.BULK_ANNOTATIONS_NS, table_description(name))[0]
            A.link(self.conn, "Plate", [(self.plate.id, wells_ann), (self.plate.id, fields_ann)], gid)
        images = results.images
        if "wells" in self.attach_to:
            well_ids = {w.name: w.id for w in layout.wells}
            if "csv" in self.outputs:
                groups = list(images.groupby("well", sort=False))
                anns = self._files([(f"{name}_{well}.csv", rows.to_csv(index=False).encode(), "text/csv")
                                    for well, rows in groups])
                A.link(self.conn, "Well", [(well_ids[well], a) for (well, _), a in zip(groups, anns)], gid)
            if "key_values" in self.outputs:
                pairs = [well_key_values(row, name) for _, row in per_well.iterrows()]
                anns = A.map_annotations(self.conn, pairs, self.ns, gid)
                self.report.add("MapAnnotation", anns)
                A.link(self.conn, "Well", [(well_ids[w], a) for w, a in zip(per_well["well_name"], anns)], gid)
        if "images" in self.attach_to and "csv" in self.outputs and "image_id" in images:
            groups = [(int(iid), rows) for iid, rows in images.groupby("image_id", sort=False)]
            anns = self._files([(f"{name}_image{iid}.csv", rows.to_csv(index=False).encode(), "text/csv")
                                for iid, rows in groups])
            A.link(self.conn, "Image", [(iid, a) for (iid, _), a in zip(groups, anns)], gid)

    def _write_pictures(self, results: PlateResults) -> None:
        """The heat map PNG on the plate; the measured objects as ROIs on the images,
        each batch's IDs recorded as it is saved, so that a failure removes them."""
        layout = self.plate.layout
        if self.heatmap:
            from openhcs_omero_lib.pictures.heatmap import drawable, plate_heatmap

            if drawable(layout.rows, layout.columns):
                png = plate_heatmap(results.wells, layout.rows, layout.columns, plate=layout.name,
                                    pipeline=self.pipeline, measurement=self.heatmap_measurement).png
                anns = self._files([(f"{self.pipeline}_heatmap.png", png, "image/png")])
                A.link(self.conn, "Plate", [(self.plate.id, anns[0])], self.plate.group_id)
            else:  # the results matter more than their picture
                self.report.heatmap_note = f"no heat map of a plate of {layout.rows}x{layout.columns} wells"
        if self.rois is not None and results.outlines:
            self.report.rois = R.plan(results.outlines, layout.image_ids, self.rois.cap)
            R.save_rois(self.conn, self.report.rois, self.ns, self.plate.group_id, self.rois.z,
                        self.report.created.setdefault("Roi", []))


def well_rows(results: PlateResults, layout: PlateLayout) -> pd.DataFrame:
    """One row per well and run: what viewers that look a well up (OMERO.web's well
    panel, OMERO.parade) show for it. ``Well`` (its ID), ``well_name``, ``run_id`` and
    ``run`` where the plate has runs, then the well's values (``sites``,
    ``sites_failed``, measurements; see :func:`results.wells_table`). With several
    timepoints each value has a column per timepoint (``nuclei_count_t2``); when
    those would not fit in a table (:data:`TABLE_COLUMN_LIMIT`), the first and last
    timepoints and the mean over time (``_time_mean``) instead. The full time series
    is in the CSVs and the field-level table."""
    wells = results.wells
    runs = "run_id" in wells
    values = measurement_columns(wells)
    timepoints = list(dict.fromkeys(int(t) for t in wells["timepoint"]))
    fixed = 2 + (len(RUN_COLUMNS) if runs else 0)
    if len(timepoints) == 1:
        columns = [(c, timepoints[0], c) for c in values]
    elif fixed + len(values) * len(timepoints) <= TABLE_COLUMN_LIMIT:
        columns = [(f"{c}_t{t}", t, c) for c in values for t in timepoints]
    else:
        first, last = timepoints[0], timepoints[-1]
        columns = [(name, t, c) for c in values
                   for name, t in ((f"{c}_t{first}", first), (f"{c}_t{last}", last), (f"{c}_time_mean", None))]
    well_ids = {w.name: w.id for w in layout.wells}
    rows = []
    for _, group in wells.groupby(["run_id", "well"] if runs else ["well"], sort=False, dropna=False):
        head = group.iloc[0]
        row: dict[str, Any] = {"Well": well_ids[head["well"]], "well_name": head["well"]}
        if runs:
            row.update(run_id=head["run_id"], run=head["run"])
        at = group.set_index(group["timepoint"].astype(int))
        for name, t, column in columns:
            series = pd.to_numeric(at[column], errors="coerce")
            row[name] = series.mean() if t is None else series.get(t)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if runs:
        frame["run_id"] = frame["run_id"].astype("Int64")
    for name, t, column in columns:
        whole = column.endswith("_count") or column in ("sites", "sites_failed")
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
        frame[name] = frame[name].astype("Int64") if whole and t is not None else frame[name].astype(float)
    return frame


def well_key_values(row: pd.Series, pipeline: str) -> list[tuple[str, str]]:
    """Key-value pairs of one well (and run): its row of :func:`well_rows`."""
    pairs = [("pipeline", pipeline)]
    for key, value in row.items():
        if key in ("Well", "well_name"):
            continue
        if key.startswith("sites_failed") and value == 0:
            continue
        if pd.isna(value):
            text = ""
        elif isinstance(value, str):
            text = value
        elif isinstance(value, (int, np.integer)):
            text = str(int(value))
        else:
            text = f"{value:.6g}"
        pairs.append((key, text))
    return pairs


def field_table(results: PlateResults, layout: PlateLayout) -> pd.DataFrame:
    """One row per field, timepoint and run, in the project's own namespace. Its
    ``Image`` ImageColumn lets OMERO.web show a field's rows for a selected image; it
    has no ``Well`` (or ``well``) column, so a viewer that looks a well up in the
    newest table it can query never takes these rows for the well's."""
    images = results.images
    well_ids = {w.name: w.id for w in layout.wells}
    frame = pd.DataFrame({"Image": images["image_id"].astype("Int64"),
                          "well_id": pd.array([well_ids[w] for w in images["well"]], dtype="Int64"),
                          "well_name": images["well"], "field": images["site"].astype(int),
                          "timepoint": images["timepoint"].astype(int)})
    for column in RUN_COLUMNS:
        if column in images:
            frame[column] = images[column]
    for column in measurement_columns(images):
        frame[column] = pd.to_numeric(images[column], errors="coerce")
    frame["error"] = images["error"]
    return frame


def summary_json(results: PlateResults) -> str:
    return json.dumps(results.summary, default=str)
