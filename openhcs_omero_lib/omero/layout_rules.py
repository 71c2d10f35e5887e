"""The rules by which OMERO's answers become a :class:`~openhcs_omero_lib.plates.layout.PlateLayout`:
the rows the layout queries fetch (:class:`PlateSummary`, :class:`FieldRow`) and the hooks
that interpret them (:class:`LayoutRules`). :class:`~.metadata.OMEROMetadataHandler`
is the public class built on them; :func:`~.plate.load_plate` applies them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Iterable

from omero.rtypes import unwrap

from openhcs_omero_lib.plates.layout import Channel, PlateLayout, Run, Well, plate_format


@dataclass(frozen=True)
class PlateSummary:
    id: int
    name: str | None
    rows: int | None
    columns: int | None


@dataclass(frozen=True)
class FieldRow:
    """One well sample (field) of a well, as OMERO stores it (row and column from 0),
    with its index in the well's list and its run (PlateAcquisition ID and name, None
    outside runs); a well without fields has one row whose other values are None."""

    well_id: int
    row: int
    column: int
    sample_id: int | None
    image_id: int | None
    pixels_id: int | None
    index: int | None = None
    run_id: int | None = None
    run_name: str | None = None

class LayoutRules:
    """Default interpretation of OMERO's HCS model; override a hook to change it."""

    # ---- hooks: how OMERO's rows become a layout -----------------------------------------------

    def plate_name(self, plate: PlateSummary) -> str:
        return plate.name or f"plate_{plate.id}"

    def well_position(self, field: FieldRow) -> tuple[int, int]:
        """1-based (row, column); OMERO stores them 0-based."""
        return field.row + 1, field.column + 1

    def site_of(self, field: FieldRow, first_index: int) -> int:
        """1-based field number of a well sample: its index in the well's list,
        counted from ``first_index`` (the lowest index of the field's run on the
        plate; 0 for a field outside runs, as OMERO.web's plate grid counts them)."""
        if field.index is None:
            raise ValueError(f"well sample {field.sample_id} has no index in its well")
        return field.index - first_index + 1

    def run_name(self, run_id: int, name: str | None) -> str:
        """A run without a name is called as omero-py's PlateAcquisitionWrapper calls it."""
        return name or f"Run {run_id}"

    def emission_wavelength(self, logical_channel: Any) -> float | None:
        wave = logical_channel.getEmissionWave() if logical_channel is not None else None
        return float(wave.getValue()) if wave is not None else None

    def channel_name(self, index: int, logical_channel: Any) -> str:
        name = unwrap(logical_channel.getName()) if logical_channel is not None else None
        return name or f"w{index}"

    def pixel_size_um(self, pixels: Any) -> float | None:
        size = pixels.getPhysicalSizeX()
        if size is None:
            return None
        unit = str(size.getUnit())
        factor = {"MICROMETER": 1.0, "NANOMETER": 1e-3, "MILLIMETER": 1e3}.get(unit)
        return float(size.getValue()) * factor if factor else None

    def build_layout(self, plate: PlateSummary, fields: Iterable[FieldRow], pixels: Any,
                     channels: list[Any], runs: Collection[int] | None = None) -> tuple[PlateLayout, dict]:
        """The layout and ``{(well name, site, run ID): pixels ID}``; with ``runs``
        (PlateAcquisition IDs), only the fields of those runs."""
        fields = list(fields)
        first_index: dict[int | None, int] = {None: 0}
        for field in fields:
            if field.run_id is not None and field.index is not None:
                first_index[field.run_id] = min(first_index.get(field.run_id, field.index), field.index)
        wells: dict[int, Well] = {}
        image_ids, pixels_ids = {}, {}
        kept_runs: dict[int | None, str] = {}
        sites = 1
        for field in fields:
            if field.well_id not in wells:
                row, col = self.well_position(field)
                wells[field.well_id] = Well(row, col, field.well_id)
            if field.sample_id is None or field.image_id is None or field.pixels_id is None:
                continue
            if runs is not None and field.run_id not in runs:
                continue
            well = wells[field.well_id]
            site = self.site_of(field, first_index[field.run_id])
            key = (well.name, site, field.run_id)
            if key in pixels_ids:
                raise ValueError(f"plate {plate.id}: well {well.name} has two fields numbered {site}"
                                 + (f" in run {field.run_id}" if field.run_id is not None else ""))
            sites = max(sites, site)
            image_ids[key] = field.image_id
            pixels_ids[key] = field.pixels_id
            if field.run_id not in kept_runs:
                kept_runs[field.run_id] = "" if field.run_id is None else self.run_name(field.run_id, field.run_name)
        order = sorted(kept_runs, key=lambda r: (r is not None, first_index.get(r, 0), r or 0))
        plate_runs = tuple(Run(r, kept_runs[r]) for r in order) if set(kept_runs) - {None} else ()
        ordered = sorted(wells.values(), key=lambda w: (w.row, w.column))
        n_channels = unwrap(pixels.getSizeC())
        by_index = {i + 1: ch for i, ch in enumerate(channels)}
        chans = tuple(Channel(i, self.channel_name(i, _logical(by_index.get(i))),
                              self.emission_wavelength(_logical(by_index.get(i))))
                      for i in range(1, n_channels + 1))
        rows, cols = plate.rows, plate.columns
        if not rows or not cols:
            rows, cols = plate_format(len(ordered))
        rows = max([rows] + [w.row for w in ordered])
        cols = max([cols] + [w.column for w in ordered])
        layout = PlateLayout(
            name=self.plate_name(plate), rows=rows, columns=cols, wells=tuple(ordered), sites=sites,
            channels=chans, z_planes=unwrap(pixels.getSizeZ()), timepoints=unwrap(pixels.getSizeT()),
            plane_shape=(unwrap(pixels.getSizeY()), unwrap(pixels.getSizeX())),
            dtype=unwrap(pixels.getPixelsType().getValue()), pixel_size_um=self.pixel_size_um(pixels),
            plate_id=plate.id, image_ids=image_ids, runs=plate_runs, fields=frozenset(pixels_ids))
        return layout, pixels_ids


def _logical(channel: Any) -> Any:
    return channel.getLogicalChannel() if channel is not None else None

