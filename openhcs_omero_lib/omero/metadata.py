"""How OMERO's answers become a :class:`~openhcs_omero_lib.layout.PlateLayout`.

:class:`OMEROMetadataHandler` is the extension point for plates whose metadata needs
interpreting: subclass it and override a hook, then pass an instance to
:func:`~openhcs_omero_lib.omero.plate.load_plate` (or to ``run_on_plate``). For example,
a facility whose channel names live in a naming convention rather than in OMERO::

    class ByWavelength(OMEROMetadataHandler):
        def channel_name(self, index, logical_channel):
            wave = self.emission_wavelength(logical_channel)
            return {461: "DAPI", 525: "GFP"}.get(round(wave or 0), f"w{index}")

The handler sees what the layout queries fetched: the plate's name and format, one
:class:`FieldRow` of plain IDs and positions per well and field (not model objects:
a 1536-well plate's layout must not cost the script hundreds of megabytes), and one
image's pixels (``omero.model.Pixels`` with its pixels type) and channels with their
logical channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from omero.rtypes import unwrap

from ..layout import Channel, PlateLayout, Well, plate_format


@dataclass(frozen=True)
class PlateSummary:
    id: int
    name: str | None
    rows: int | None
    columns: int | None


@dataclass(frozen=True)
class FieldRow:
    """One well sample (field) of a well, as OMERO stores it (row and column from 0);
    a well without fields has one row whose other IDs are None."""

    well_id: int
    row: int
    column: int
    sample_id: int | None
    image_id: int | None
    pixels_id: int | None


class OMEROMetadataHandler:
    """Default interpretation of OMERO's HCS model; override hooks to change it."""

    def plate_name(self, plate: PlateSummary) -> str:
        return plate.name or f"plate_{plate.id}"

    def well_position(self, field: FieldRow) -> tuple[int, int]:
        """1-based (row, column); OMERO stores them 0-based."""
        return field.row + 1, field.column + 1

    def site_of(self, field: FieldRow, index: int) -> int:
        """1-based field number of a well sample; by default its position in the well
        (fields come in the order OMERO created them)."""
        return index + 1

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
                     channels: list[Any]) -> tuple[PlateLayout, dict]:
        """The layout and ``{(well name, site): pixels ID}``."""
        wells: dict[int, Well] = {}
        samples_seen: dict[int, int] = {}
        image_ids, pixels_ids = {}, {}
        sites = 1
        for field in fields:
            if field.well_id not in wells:
                row, col = self.well_position(field)
                wells[field.well_id] = Well(row, col, field.well_id)
            if field.sample_id is None:
                continue
            index = samples_seen.get(field.well_id, 0)
            samples_seen[field.well_id] = index + 1
            if field.image_id is None or field.pixels_id is None:
                continue
            well = wells[field.well_id]
            site = self.site_of(field, index)
            sites = max(sites, site)
            image_ids[(well.name, site)] = field.image_id
            pixels_ids[(well.name, site)] = field.pixels_id
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
            plate_id=plate.id, image_ids=image_ids)
        return layout, pixels_ids


def _logical(channel: Any) -> Any:
    return channel.getLogicalChannel() if channel is not None else None
