"""Result tables of a run.

A run produces :class:`PlateResults`: ``images`` (one row per well, site and
timepoint, and acquisition run where the plate has runs), ``wells`` (per well,
timepoint and run: ``*_count`` columns summed over sites, every other measurement
averaged) and ``summary`` (plate, pipeline, version, timing, errors). A plate with
acquisition runs (an OMERO plate's PlateAcquisitions) adds ``run_id`` and ``run``
(its name) after the keys; a plate without runs (a local folder) has no such
columns. Sinks (:mod:`.sinks`; OMERO's in :mod:`openhcs_omero_lib.omero.sink`) store them.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from openhcs_omero_lib import __version__
from openhcs_omero_lib.execution.executor import UnitResult
from openhcs_omero_lib.pipeline.spec import PipelineSpec
from openhcs_omero_lib.plates.layout import PlateLayout, SiteUnit, parse_well, row_letters

KEY_COLUMNS = ["well", "row", "column", "site", "timepoint"]
RUN_COLUMNS = ["run_id", "run"]
_NOT_MEASURED = ("error", "image_id", "well_id", *RUN_COLUMNS)
IMAGES_CSV, WELLS_CSV, RESULTS_JSON = "images.csv", "wells.csv", "results.json"


@dataclass
class PlateResults:
    images: pd.DataFrame
    wells: pd.DataFrame
    summary: dict[str, Any]
    outlines: dict[SiteUnit, dict[str, Any]] | None = None
    """When the run kept them: each unit's objects' outlines by column prefix
    (:class:`~.pipeline.outlines.Outlines`); failed units have none."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.summary["errors"]

    def files(self) -> dict[str, bytes]:
        """The run as the three files every sink offers, by name."""
        return {IMAGES_CSV: self.images.to_csv(index=False).encode(),
                WELLS_CSV: self.wells.to_csv(index=False).encode(),
                RESULTS_JSON: (json.dumps(self.summary, indent=2, default=_json_default) + "\n").encode()}


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def measurement_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in KEY_COLUMNS and c not in _NOT_MEASURED]


def _counts_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts stay whole numbers; a count that could not be measured is <NA>."""
    for c in frame.columns:
        if c.endswith("_count"):
            frame[c] = frame[c].astype("Int64")
    return frame


def images_table(layout: PlateLayout, results: Sequence[UnitResult]) -> pd.DataFrame:
    """One row per unit: keys, measurements in the order the pipeline made them, error."""
    rows = []
    for r in results:
        row_num, col = parse_well(r.unit.well)
        row = {"well": r.unit.well, "row": row_letters(row_num), "column": col,
               "site": r.unit.site, "timepoint": r.unit.timepoint}
        row.update(r.measurements)
        row["error"] = r.error or ""
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame = _counts_as_integers(frame[KEY_COLUMNS + measurement_columns(frame) + ["error"]])
    position = len(KEY_COLUMNS)
    if layout.runs:
        frame.insert(position, "run_id", pd.array([r.unit.run for r in results], dtype="Int64"))
        frame.insert(position + 1, "run", [layout.run_name(r.unit.run) for r in results])
        position += len(RUN_COLUMNS)
    if layout.image_ids:
        ids = [layout.image_ids.get(r.unit.image_key) for r in results]
        frame.insert(position, "image_id", pd.array(ids, dtype="Int64"))
    return frame


def wells_table(layout: PlateLayout, images: pd.DataFrame) -> pd.DataFrame:
    """Per well, timepoint (and run): sites measured and failed, counts summed, the
    rest averaged over the measured sites as pandas' ``Series.mean`` does (missing
    values skipped). Rows come in the images' order (run, then well, then timepoint).

    Why numpy per well instead of pandas: selecting each well's rows from the frame
    cost a millisecond of indexing per well, more than a small plate's whole run
    writes; pandas' grouped mean sums in another order and would change the last
    digit of some means."""
    measured = measurement_columns(images)
    runs = "run_id" in images
    keys = ["run_id", "well", "timepoint"] if runs else ["well", "timepoint"]
    codes = images.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if len(order) else []
    ok = (images["error"] == "").to_numpy()
    values = {c: pd.to_numeric(images[c], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
              for c in measured}
    key_values = {k: images[k].to_numpy(dtype=object) for k in (*keys, "run") if k in images}
    rows = []
    for positions in groups:
        first = {k: column[positions[0]] for k, column in key_values.items()}
        measured_here = positions[ok[positions]]
        row_num, col = parse_well(first["well"])
        row: dict[str, Any] = {"well": first["well"], "row": row_letters(row_num), "column": col,
                               "timepoint": first["timepoint"]}
        if runs:
            row.update(run_id=first["run_id"], run=first["run"])
        row.update(sites=len(measured_here), sites_failed=len(positions) - len(measured_here))
        for c in measured:
            v = values[c][measured_here]
            if c.endswith("_count"):
                row[c] = int(np.nansum(v)) if len(v) else None
            else:
                n = np.count_nonzero(~np.isnan(v))
                row[c] = float(np.sum(np.where(np.isnan(v), 0.0, v)) / n) if n else math.nan
        rows.append(row)
    frame = _counts_as_integers(pd.DataFrame(rows))
    if runs:
        frame["run_id"] = frame["run_id"].astype("Int64")
    well_ids = {w.name: w.id for w in layout.wells if w.id is not None}
    if well_ids:
        position = frame.columns.get_loc("run" if runs else "timepoint") + 1
        frame.insert(position, "well_id", pd.array([well_ids.get(w) for w in frame["well"]], dtype="Int64"))
    return frame


def collect(layout: PlateLayout, spec: PipelineSpec, results: Sequence[UnitResult], *,
            source: str, started: float, finished: float, workers: int,
            executor: str = "processes") -> PlateResults:
    """Tables and summary of a finished run (``executor``: processes or dask)."""
    images = images_table(layout, results)
    wells = wells_table(layout, images)
    errors = [{"well": r.unit.well, "site": r.unit.site, "timepoint": r.unit.timepoint,
               **({"run_id": r.unit.run} if layout.runs else {}), "error": r.error}
              for r in results if r.error]
    summary = {
        "plate": {"name": layout.name, "id": layout.plate_id, "source": source,
                  "wells": len(layout.wells), "sites": layout.sites, "fields": layout.n_fields,
                  "runs": [{"id": r.id, "name": r.name} for r in layout.runs],
                  "channels": [{"index": c.index, "name": c.name} for c in layout.channels],
                  "z_planes": layout.z_planes, "timepoints": layout.timepoints,
                  "plane_shape": list(layout.plane_shape), "dtype": layout.dtype,
                  "pixel_size_um": layout.pixel_size_um},
        "pipeline": {"name": spec.name, "spec": spec.model_dump(mode="json")},
        "openhcs_omero_version": __version__,
        "python": platform.python_version(),
        "timing": {"started": started, "finished": finished, "seconds": round(finished - started, 3),
                   "units": len(results),
                   "units_per_second": round(len(results) / max(finished - started, 1e-9), 2)},
        "workers": workers,
        "executor": executor,
        "units_failed": len(errors),
        "errors": errors,
    }
    kept = {r.unit: r.outlines for r in results if r.outlines is not None}
    return PlateResults(images, wells, summary, outlines=kept or None)
