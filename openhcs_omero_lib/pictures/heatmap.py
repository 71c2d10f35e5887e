"""A plate heat map: one well-level measurement over the plate in its real geometry.

Wells are drawn where they sit on the plate, rows lettered and columns numbered as
the plate names them, coloured by the measurement (viridis, with a colour bar).
What is not a value is never a colour of the scale: a well whose every field failed
is red with a white cross, a measured well without a value (a mean over no objects)
is grey, a plate position with no well or no image is near-white, and a well where
only some fields failed keeps its colour with a red corner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from openhcs_omero_lib.pictures import PNG_DPI, png_bytes
from openhcs_omero_lib.plates.layout import parse_well, row_letters, well_name
from openhcs_omero_lib.results.tables import measurement_columns

COLORMAP = "viridis"
FAILED = "#d62728"
NO_VALUE = "#a0a0a0"
NOT_IMAGED = "#f2f2f2"
_NOT_MEASUREMENTS = ("sites", "sites_failed")
MAX_ROWS, MAX_COLUMNS = 32, 48  # a 1536-well plate

# Inches. The grid gets at most the width OMERO.web's attachment preview and a
# browser tab show without scaling (about 1000 px), and wells at least 0.2 in.
_MAX_GRID_WIDTH, _MIN_GRID_WIDTH, _MAX_CELL = 10.5, 4.5, 0.45
_LEFT, _TOP, _RIGHT, _BOTTOM = 0.55, 1.0, 1.6, 0.6


@dataclass(frozen=True)
class HeatMap:
    """The PNG and where it drew what: ``centres`` has every position of the plate
    (``A01``...) in PNG pixels from the top left; ``cell`` is a well's side in pixels."""

    png: bytes
    width: int
    height: int
    measurement: str
    timepoint: int
    vmin: float
    vmax: float
    centres: dict[str, tuple[float, float]]
    cell: float
    values: dict[str, float]
    failed: tuple[str, ...]
    partly_failed: tuple[str, ...]
    no_value: tuple[str, ...]
    not_imaged: tuple[str, ...]
    run: int | None = None
    """The acquisition run drawn, on a plate with runs"""


def well_measurements(wells: pd.DataFrame) -> list[str]:
    """Columns of a wells table a heat map can draw."""
    return [c for c in measurement_columns(wells) if c not in _NOT_MEASUREMENTS]


def default_measurement(columns: list[str]) -> str:
    """The first count column, else the first measurement."""
    if not columns:
        raise ValueError("the results have no measurement to draw")
    return next((c for c in columns if c.endswith("_count")), columns[0])


def pipeline_columns(spec) -> list[str]:
    """The well-level columns a bound pipeline spec measures, in the order it makes
    them, so that a chosen measurement is checked before anything runs."""
    from openhcs_omero_lib.pipeline.spec import MeasureImage, MeasureObjects, Ratio

    cols: list[str] = []
    for step in spec.steps:
        if isinstance(step, MeasureObjects):
            p = step.column_prefix
            cols += [f"{p}_count", f"{p}_area_mean"] + [f"{p}_{n}_intensity_mean" for n in step.intensity]
        elif isinstance(step, MeasureImage):
            for n in step.images:
                cols += [f"{n}_mean", f"{n}_integrated"]
        elif isinstance(step, Ratio):
            cols.append(step.output)
    return list(dict.fromkeys(cols))


def check_measurement(spec, measurement: str | None) -> str:
    """The measurement a heat map of this pipeline draws; ValueError names the
    choices when ``measurement`` is not one of its columns."""
    cols = pipeline_columns(spec)
    if measurement in (None, ""):
        return default_measurement(cols)
    if measurement not in cols:
        raise ValueError(f"pipeline '{spec.name}' measures no '{measurement}'; "
                         f"a heat map can show {', '.join(cols)}")
    return measurement


def drawable(rows: int, columns: int) -> bool:
    """Whether a plate of this format fits a heat map (standard plates up to 1536 wells)."""
    return 1 <= rows <= MAX_ROWS and 1 <= columns <= MAX_COLUMNS


def _layout_inches(rows: int, columns: int) -> tuple[float, float, float]:
    grid_w = min(_MAX_GRID_WIDTH, max(_MIN_GRID_WIDTH, _MAX_CELL * columns))
    cell = grid_w / columns
    return cell, grid_w, cell * rows


def plate_heatmap(wells: pd.DataFrame, rows: int, columns: int, *, plate: str, pipeline: str,
                  measurement: str | None = None, timepoint: int | None = None,
                  run: int | None = None) -> HeatMap:
    """The heat map of ``measurement`` (default: the first count column) over a plate
    of ``rows`` x ``columns`` wells, from a wells table (:func:`~.results.wells_table`);
    with several timepoints, of ``timepoint`` (default the first); on a plate imaged in
    several acquisition runs (a ``run_id`` column), of ``run`` (default the first)."""
    if not drawable(rows, columns):
        raise ValueError(f"a plate of {rows}x{columns} wells is not one a heat map can draw "
                         f"(up to {MAX_ROWS}x{MAX_COLUMNS})")
    choices = well_measurements(wells)
    measurement = measurement or default_measurement(choices)
    if measurement not in choices:
        if choices or not len(wells) or (wells["sites"] != 0).any():
            raise ValueError(f"no measurement '{measurement}' in the results; choose one of {', '.join(choices)}")
        wells = wells.assign(**{measurement: np.nan})  # every field failed: nothing was measured
    timepoints = sorted(int(t) for t in wells["timepoint"].unique())
    t = timepoints[0] if timepoint is None else int(timepoint)
    if t not in timepoints:
        raise ValueError(f"no timepoint {t} in the results (timepoints: {timepoints})")

    runs = list(dict.fromkeys(int(r) for r in wells["run_id"].dropna())) if "run_id" in wells else []
    if run is not None and run not in runs:
        raise ValueError(f"no run {run} in the results (runs: {runs})")
    chosen_run = run if run is not None else (runs[0] if runs else None)
    if chosen_run is not None:
        wells = wells[wells["run_id"] == chosen_run]
        run_name = str(wells["run"].iloc[0]) if "run" in wells and len(wells) else str(chosen_run)
    records = wells[wells["timepoint"] == t].to_dict("records")
    values: dict[str, float] = {}
    failed, partly, no_value, seen = [], [], [], set()
    for rec in records:
        r, c = parse_well(rec["well"])
        if r > rows or c > columns:
            raise ValueError(f"well {rec['well']} is outside a {rows}x{columns} plate")
        name = well_name(r, c)
        seen.add(name)
        if int(rec["sites"]) == 0:
            failed.append(name)
            continue
        if int(rec["sites_failed"]) > 0:
            partly.append(name)
        value = pd.to_numeric(pd.Series([rec[measurement]]), errors="coerce").iloc[0]
        if pd.isna(value) or not np.isfinite(float(value)):
            no_value.append(name)
        else:
            values[name] = float(value)
    not_imaged = [well_name(r, c) for r in range(1, rows + 1) for c in range(1, columns + 1)
                  if well_name(r, c) not in seen]

    vmin, vmax = (min(values.values()), max(values.values())) if values else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    norm = colors.Normalize(vmin, vmax)
    cmap = colormaps[COLORMAP]
    rgba = np.empty((rows, columns, 4))
    rgba[:] = colors.to_rgba(NOT_IMAGED)
    for name, value in values.items():
        r, c = parse_well(name)
        rgba[r - 1, c - 1] = cmap(norm(value))
    for names, colour in ((failed, FAILED), (no_value, NO_VALUE)):
        for name in names:
            r, c = parse_well(name)
            rgba[r - 1, c - 1] = colors.to_rgba(colour)

    cell, grid_w, grid_h = _layout_inches(rows, columns)
    fig_w = round(_LEFT + grid_w + _RIGHT, 2)
    fig_h = round(_TOP + grid_h + _BOTTOM, 2)
    fig = Figure(figsize=(fig_w, fig_h), dpi=PNG_DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((_LEFT / fig_w, _BOTTOM / fig_h, grid_w / fig_w, grid_h / fig_h))
    ax.imshow(rgba, extent=(0, columns, rows, 0), interpolation="nearest", aspect="auto")
    ax.set_xlim(0, columns)
    ax.set_ylim(rows, 0)
    font = max(5.0, min(10.0, cell * 72 * 0.42))
    ax.set_xticks(np.arange(columns) + 0.5, [str(c) for c in range(1, columns + 1)], fontsize=font)
    ax.set_yticks(np.arange(rows) + 0.5, [row_letters(r) for r in range(1, rows + 1)], fontsize=font)
    ax.xaxis.tick_top()
    ax.tick_params(length=0, pad=2)
    ax.set_xticks(np.arange(columns + 1), minor=True)
    ax.set_yticks(np.arange(rows + 1), minor=True)
    ax.tick_params(which="minor", length=0)
    line = 1.0 if cell * PNG_DPI >= 12 else 0.5
    ax.grid(which="minor", color="white", linewidth=line)
    ax.grid(which="major", visible=False)
    for spine in ax.spines.values():
        spine.set_visible(False)

    if failed:  # a cross, not only a colour: readable without colour vision
        segs = []
        for name in failed:
            r, c = parse_well(name)
            x, y = c - 1, r - 1
            segs += [[(x + 0.22, y + 0.22), (x + 0.78, y + 0.78)], [(x + 0.22, y + 0.78), (x + 0.78, y + 0.22)]]
        ax.add_collection(LineCollection(segs, colors="white", linewidths=max(1.0, cell * 4)))
    if partly:
        corners = []
        for name in partly:
            r, c = parse_well(name)
            corners.append([(c - 0.4, r - 1), (c, r - 1), (c, r - 0.6)])
        ax.add_collection(PolyCollection(corners, facecolors=FAILED, edgecolors="none"))

    cax = fig.add_axes(((_LEFT + grid_w + 0.3) / fig_w, _BOTTOM / fig_h, 0.2 / fig_w, grid_h / fig_h))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.set_label(measurement, fontsize=9)
    cax.tick_params(labelsize=8)
    is_count = measurement.endswith("_count")
    if is_count:
        cax.yaxis.set_major_locator(MaxNLocator(integer=True))

    legend = []
    if failed:
        legend.append(Patch(facecolor=FAILED, edgecolor="white", hatch="xx", label="failed (no field measured)"))
    if partly:
        legend.append(Line2D([], [], linestyle="none", marker=(3, 0, -90), markersize=8, color=FAILED,
                             label="some fields failed"))
    if no_value:
        legend.append(Patch(facecolor=NO_VALUE, label="no value"))
    if not_imaged:
        legend.append(Patch(facecolor=NOT_IMAGED, edgecolor="#c8c8c8", label="no well or image"))
    if legend:
        fig.legend(handles=legend, loc="lower left", bbox_to_anchor=(_LEFT / fig_w, 0.02), ncol=len(legend),
                   frameon=False, fontsize=8, handlelength=1.2, columnspacing=1.2)

    how = "sum over fields" if is_count else "mean over fields"
    second = f"{measurement} per well ({how})"
    if len(timepoints) > 1:
        second += f", timepoint {t} of {len(timepoints)}"
    if len(runs) > 1:
        second += f", run {run_name} ({runs.index(chosen_run) + 1} of {len(runs)})"
    if failed:
        second += f"; {len(failed)} well{'s' if len(failed) != 1 else ''} failed"
    fig.text(0.5 * (_LEFT + grid_w) / fig_w, 1 - 0.12 / fig_h, f"{plate} · {pipeline}",
             ha="center", va="top", fontsize=12, fontweight="bold")
    fig.text(0.5 * (_LEFT + grid_w) / fig_w, 1 - 0.4 / fig_h, second, ha="center", va="top", fontsize=9.5)

    canvas.draw()
    width, height = canvas.get_width_height()
    centres = {}
    for r in range(1, rows + 1):
        for c in range(1, columns + 1):
            x, y = ax.transData.transform((c - 0.5, r - 0.5))
            centres[well_name(r, c)] = (float(x), float(height - y))
    return HeatMap(png_bytes(canvas), width, height, measurement, t, vmin, vmax, centres, cell * PNG_DPI,
                   values, tuple(failed), tuple(partly), tuple(no_value), tuple(not_imaged), chosen_run)
