"""Storing a run's results on the plate, its wells and its images."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..results import IMAGES_CSV, RESULTS_JSON, WELLS_CSV, PlateResults, ResultSink, measurement_columns
from . import annotations as A
from . import rois as R
from .plate import OmeroPlate

NS_PREFIX = "openhcs.omero/results"
TABLE_DESCRIPTION = "openhcs-omero"
ATTACH_CHOICES = ("plate", "wells", "images")
OUTPUT_CHOICES = ("csv", "json", "table", "key_values")


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
    plate's group. New results are saved first and earlier ones of the same pipeline
    removed after; if saving fails, what was saved is removed and the earlier results
    stay as they were."""

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
        targets["Image"] = sorted(set(layout.image_ids.values()))
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
            self._write_new(results)
            self._write_pictures(results)
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
        if "table" in self.outputs:
            table_file = A.create_table(self.conn, f"{name}_{layout.name}.omero.h5",
                                        bulk_table(results), gid)
            anns = self._annotate([table_file], A.BULK_ANNOTATIONS_NS, table_description(name))
            A.link(self.conn, "Plate", [(self.plate.id, anns[0])], gid)
        images = results.images
        if "wells" in self.attach_to:
            well_ids = {w.name: w.id for w in layout.wells}
            if "csv" in self.outputs:
                groups = list(images.groupby("well", sort=False))
                anns = self._files([(f"{name}_{well}.csv", rows.to_csv(index=False).encode(), "text/csv")
                                    for well, rows in groups])
                A.link(self.conn, "Well", [(well_ids[well], a) for (well, _), a in zip(groups, anns)], gid)
            if "key_values" in self.outputs:
                wells = results.wells
                pairs = [well_key_values(rows, name) for _, rows in wells.groupby("well", sort=False)]
                anns = A.map_annotations(self.conn, pairs, self.ns, gid)
                self.report.add("MapAnnotation", anns)
                order = list(dict.fromkeys(wells["well"]))
                A.link(self.conn, "Well", [(well_ids[w], a) for w, a in zip(order, anns)], gid)
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
            from ..pictures.heatmap import drawable, plate_heatmap

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


def well_key_values(rows: pd.DataFrame, pipeline: str) -> list[tuple[str, str]]:
    """Key-value pairs of one well's aggregate rows (one per timepoint)."""
    pairs = [("pipeline", pipeline)]
    several = len(rows) > 1
    for _, row in rows.iterrows():
        suffix = f" (t={row['timepoint']})" if several else ""
        pairs.append((f"sites{suffix}", str(row["sites"])))
        if row["sites_failed"]:
            pairs.append((f"sites_failed{suffix}", str(row["sites_failed"])))
        for col in measurement_columns(rows):
            if col in ("sites", "sites_failed", "timepoint"):
                continue
            value = row[col]
            pairs.append((col + suffix, "" if pd.isna(value) else f"{value:.6g}"))
    return pairs


def bulk_table(results: PlateResults) -> pd.DataFrame:
    """Per-well rows then per-image rows, in the columns viewers look for: ``Well``
    (and ``Image``) IDs, a ``Level`` saying which a row is, then measurements."""
    wells, images = results.wells, results.images
    measured = measurement_columns(images)
    first_image = images.drop_duplicates("well").set_index("well")["image_id"] if "image_id" in images else None
    well_ids = wells.set_index("well")["well_id"] if "well_id" in wells else None
    rows = []
    for _, r in wells.iterrows():
        rows.append({"Level": "well", "well_id": int(well_ids[r["well"]]) if well_ids is not None else -1,
                     "image_id": int(first_image[r["well"]]) if first_image is not None else -1,
                     "well": r["well"], "field": 0, "timepoint": int(r["timepoint"]),
                     **{c: r.get(c) for c in measured}})
    for _, r in images.iterrows():
        rows.append({"Level": "image", "well_id": int(well_ids[r["well"]]) if well_ids is not None else -1,
                     "image_id": int(r["image_id"]) if "image_id" in r else -1,
                     "well": r["well"], "field": int(r["site"]), "timepoint": int(r["timepoint"]),
                     **{c: r.get(c) for c in measured}})
    frame = pd.DataFrame(rows)
    for c in measured:
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    return frame


def summary_json(results: PlateResults) -> str:
    return json.dumps(results.summary, default=str)
