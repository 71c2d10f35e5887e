"""A QC montage: a few fields of a run with what the pipeline segmented outlined
over the image, to check a new pipeline before a screen is run.

The fields are those of the wells with the lowest and the highest values of a
measurement (by default the first count) and fields that failed: where a pipeline
goes wrong, it shows there first (empty fields counted as full, clumps counted as
one, a channel that does not load).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from openhcs_omero_lib.pictures import PNG_DPI, png_bytes
from openhcs_omero_lib.pipeline.spec import MeasureObjects, PipelineSpec
from openhcs_omero_lib.plates.layout import SiteUnit

OUTLINE_COLOURS = ("#ffd400", "#00e5ff", "#ff4fd8", "#7dff4f")
"""One per ``measure_objects`` step, in pipeline order."""
FAILED = "#d62728"
PER_ROW = 3
_TILE, _TITLE, _LABEL = 2.8, 0.75, 0.4  # inches: tile side, figure title, tile caption


@dataclass(frozen=True)
class Choice:
    unit: SiteUnit
    row: str
    """``lowest``, ``highest`` or ``failed``"""
    value: float | None
    error: str = ""


@dataclass(frozen=True)
class Tile:
    choice: Choice
    image: np.ndarray | None
    """2-D, in display units; None when the field could not be read"""
    outlines: dict | None
    """column prefix -> :class:`~..pipeline.outlines.Outlines`"""
    read_error: str = ""


@dataclass(frozen=True)
class Montage:
    """The PNG and where each tile's image sits in it (pixels, from the top left:
    ``x0, y0, x1, y1``)."""

    png: bytes
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]]
    tiles: list[Tile]
    prefixes: list[str]


def choose_fields(images: pd.DataFrame, measurement: str, per_row: int = PER_ROW) -> list[Choice]:
    """Fields to look at: in the ``per_row`` wells with the lowest and the highest well
    totals (counts) or means of ``measurement``, the field of each with the lowest
    (highest) value; then up to ``per_row`` failed fields, one per well."""
    chosen: list[Choice] = []
    ok = images[images["error"] == ""]
    if measurement in ok.columns and len(ok):
        ok = ok.assign(_v=pd.to_numeric(ok[measurement], errors="coerce").astype(float)).dropna(subset=["_v"])
        per_well = ok.groupby("well", sort=False)["_v"].agg("sum" if measurement.endswith("_count") else "mean")
        order = per_well.sort_values(kind="stable")
        low = list(order.index[:per_row])
        high = [w for w in reversed(order.index) if w not in low][:per_row]
        for wells, row, pick in ((low, "lowest", "idxmin"), (high, "highest", "idxmax")):
            for well in wells:
                fields = ok[ok["well"] == well]
                r = fields.loc[getattr(fields["_v"], pick)()]
                chosen.append(Choice(_unit(r), row, float(r["_v"])))
    failed = images[images["error"] != ""].drop_duplicates("well")
    for _, r in failed.head(per_row).iterrows():
        chosen.append(Choice(_unit(r), "failed", None, r["error"]))
    return chosen


def _unit(row) -> SiteUnit:
    run = row.get("run_id")
    return SiteUnit(row["well"], int(row["site"]), int(row["timepoint"]),
                    None if run is None or pd.isna(run) else int(run))


def objects_channel(spec: PipelineSpec) -> int | None:
    """The channel the first measured objects were segmented from: the first
    ``measure_objects`` step's labels traced back through each step's ``input``."""
    measure = next((s for s in spec.steps if isinstance(s, MeasureObjects)), None)
    if measure is None:
        return None
    name = measure.labels
    for step in reversed(spec.steps):
        if getattr(step, "output", None) == name and getattr(step, "input", None):
            name = step.input  # type: ignore[attr-defined]
    return int(name[2:]) if name.startswith("ch") and name[2:].isdigit() else None


def display_image(stack: np.ndarray) -> np.ndarray:
    """A channel's z-stack as one plane scaled to 0..1 (1st to 99.8th percentile)."""
    plane = stack.max(axis=0) if stack.ndim == 3 else stack
    plane = plane.astype(np.float32)
    lo, hi = np.percentile(plane, [1, 99.8])
    if hi <= lo:
        return np.zeros_like(plane)
    return np.clip((plane - lo) / (hi - lo), 0, 1)


def tiles_from(choices: list[Choice], read_stack, outlines: dict | None, channel: int) -> list[Tile]:
    """Each chosen field with its image (``read_stack(unit, channel)``) and outlines."""
    tiles = []
    for choice in choices:
        try:
            image, why = display_image(read_stack(choice.unit, channel)), ""
        except Exception as exc:  # a failed field may fail to read, too: still shown, as failed
            image, why = None, f"{type(exc).__name__}: {exc}".splitlines()[0]
        tiles.append(Tile(choice, image, (outlines or {}).get(choice.unit), why))
    return tiles


def render_montage(tiles: list[Tile], *, title: str, measurement: str, prefixes: list[str]) -> Montage:
    """The montage: one row each of lowest, highest and failed fields."""
    rows = [r for r in ("lowest", "highest", "failed") if any(t.choice.row == r for t in tiles)]
    if not rows:
        raise ValueError("no fields to show")
    per_row = max(sum(t.choice.row == r for t in tiles) for r in rows)
    cell_h = _TILE + _LABEL
    fig_w = round(0.9 + per_row * (_TILE + 0.15), 2)
    fig_h = round(_TITLE + len(rows) * (cell_h + 0.1) + 0.1, 2)
    fig = Figure(figsize=(fig_w, fig_h), dpi=PNG_DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    fig.text(0.5, 1 - 0.12 / fig_h, title, ha="center", va="top", fontsize=12, fontweight="bold")
    legend = [Line2D([], [], color=OUTLINE_COLOURS[i % len(OUTLINE_COLOURS)], label=p) for i, p in enumerate(prefixes)]
    if legend:
        fig.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.38 / fig_h), ncol=len(legend),
                   frameon=False, fontsize=9, handlelength=1.5)
    axes, placed = [], []
    for i, row in enumerate(rows):
        top = _TITLE + i * (cell_h + 0.1)
        fig.text(0.12 / fig_w, 1 - (top + _LABEL + _TILE / 2) / fig_h, row, rotation=90, ha="left", va="center",
                 fontsize=11, color=FAILED if row == "failed" else "black")
        for j, tile in enumerate(t for t in tiles if t.choice.row == row):
            left = 0.6 + j * (_TILE + 0.15)
            ax = fig.add_axes((left / fig_w, 1 - (top + _LABEL + _TILE) / fig_h, _TILE / fig_w, _TILE / fig_h))
            _draw_tile(ax, tile, measurement, prefixes)
            axes.append(ax)
            placed.append(tile)
    canvas.draw()
    width, height = canvas.get_width_height()
    boxes = []
    for ax in axes:
        (x0, y0), (x1, y1) = ax.get_window_extent().get_points()
        boxes.append((float(x0), float(height - y1), float(x1), float(height - y0)))
    return Montage(png_bytes(canvas, palette=True), width, height, boxes, placed, prefixes)


def _draw_tile(ax, tile: Tile, measurement: str, prefixes: list[str]) -> None:
    c = tile.choice
    where = f"{c.unit.well} field {c.unit.site}" + (f" t={c.unit.timepoint}" if c.unit.timepoint != 1 else "")
    if tile.image is not None:
        h, w = tile.image.shape
        ax.imshow(tile.image, cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0), interpolation="nearest")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
    else:
        ax.set_facecolor("#404040")
    for k, prefix in reversed(list(enumerate(prefixes))):  # the first objects on top
        found = (tile.outlines or {}).get(prefix)
        if found is None or not len(found.owner):
            continue
        polys = [poly for _, poly in found.polygons()]
        ax.add_collection(PolyCollection(polys, closed=True, facecolors="none", linewidths=0.9,
                                         edgecolors=OUTLINE_COLOURS[k % len(OUTLINE_COLOURS)]))
    ax.set_xticks([])
    ax.set_yticks([])
    if c.row == "failed":
        for spine in ax.spines.values():
            spine.set_edgecolor(FAILED)
            spine.set_linewidth(4)
        note = "\n".join(textwrap.wrap(c.error or tile.read_error, 38)[:5])
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="white",
                bbox={"facecolor": FAILED, "alpha": 0.85, "edgecolor": "none", "pad": 4})
        caption = f"{where}: failed"
    else:
        value = f"{c.value:.0f}" if measurement.endswith("_count") else f"{c.value:.4g}"
        caption = f"{where}: {measurement} {value}"
        if tile.image is None:
            ax.text(0.5, 0.5, f"image not read:\n{tile.read_error}", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="white", wrap=True)
    ax.set_title(caption, fontsize=9, pad=4)


def qc_montage(results, read_stack, spec: PipelineSpec, measurement: str, per_row: int = PER_ROW) -> Montage:
    """The montage of a finished run (:class:`~..results.PlateResults` that kept its
    outlines) whose fields are read again with ``read_stack(unit, channel)``."""
    channel = objects_channel(spec) or spec.channels_read()[0]
    prefixes = [s.column_prefix for s in spec.steps if isinstance(s, MeasureObjects)]
    tiles = tiles_from(choose_fields(results.images, measurement, per_row), read_stack, results.outlines, channel)
    plate = results.summary["plate"]["name"]
    failed = results.summary["units_failed"]
    title = f"{plate} · {spec.name}: fields with the lowest and highest {measurement}"
    if failed:
        title += f", and failed ({failed})"
    return render_montage(tiles, title=title, measurement=measurement, prefixes=prefixes)
