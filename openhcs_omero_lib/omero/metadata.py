"""How OMERO objects become a :class:`~openhcs_omero_lib.layout.PlateLayout`.

:class:`OMEROMetadataHandler` is the extension point for plates whose metadata needs
interpreting: subclass it and override a hook, then pass an instance to
:func:`~openhcs_omero_lib.omero.plate.load_plate` (or to ``run_on_plate``). For example,
a facility whose channel names live in a naming convention rather than in OMERO::

    class ByWavelength(OMEROMetadataHandler):
        def channel_name(self, index, logical_channel):
            wave = self.emission_wavelength(logical_channel)
            return {461: "DAPI", 525: "GFP"}.get(round(wave or 0), f"w{index}")

The handler sees only objects that the layout queries fetched: the plate with its
wells, well samples (fields), images, pixels and pixel types, and the channels with
logical channels of one image.
"""

from __future__ import annotations

from typing import Any

from omero.rtypes import unwrap

from ..layout import Channel, PlateLayout, Well, plate_format, well_name


class OMEROMetadataHandler:
    """Default interpretation of OMERO's HCS model; override hooks to change it."""

    def plate_name(self, plate: Any) -> str:
        return unwrap(plate.getName()) or f"plate_{plate.getId().getValue()}"

    def well_position(self, well: Any) -> tuple[int, int]:
        """1-based (row, column); OMERO stores them 0-based."""
        return unwrap(well.getRow()) + 1, unwrap(well.getColumn()) + 1

    def site_of(self, well: Any, sample: Any, index: int) -> int:
        """1-based field number of a well sample; by default its position in the well."""
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

    def build_layout(self, plate: Any, pixels: Any, channels: list[Any]) -> tuple[PlateLayout, dict]:
        """The layout and ``{(well name, site): pixels ID}``."""
        wells, image_ids, pixels_ids = [], {}, {}
        sites = 1
        for w in plate.copyWells():
            row, col = self.well_position(w)
            name = well_name(row, col)
            wells.append(Well(row, col, w.getId().getValue()))
            for index, sample in enumerate(w.copyWellSamples()):
                image = sample.getImage()
                if image is None or not image.isLoaded() or image.sizeOfPixels() == 0:
                    continue
                site = self.site_of(w, sample, index)
                sites = max(sites, site)
                image_ids[(name, site)] = image.getId().getValue()
                pixels_ids[(name, site)] = image.getPrimaryPixels().getId().getValue()
        wells.sort(key=lambda w: (w.row, w.column))
        n_channels = unwrap(pixels.getSizeC())
        by_index = {i + 1: ch for i, ch in enumerate(channels)}
        chans = tuple(Channel(i, self.channel_name(i, _logical(by_index.get(i))),
                              self.emission_wavelength(_logical(by_index.get(i))))
                      for i in range(1, n_channels + 1))
        rows, cols = unwrap(plate.getRows()), unwrap(plate.getColumns())
        if not rows or not cols:
            rows, cols = plate_format(len(wells))
        rows = max([rows] + [w.row for w in wells])
        cols = max([cols] + [w.column for w in wells])
        layout = PlateLayout(
            name=self.plate_name(plate), rows=rows, columns=cols, wells=tuple(wells), sites=sites,
            channels=chans, z_planes=unwrap(pixels.getSizeZ()), timepoints=unwrap(pixels.getSizeT()),
            plane_shape=(unwrap(pixels.getSizeY()), unwrap(pixels.getSizeX())),
            dtype=unwrap(pixels.getPixelsType().getValue()), pixel_size_um=self.pixel_size_um(pixels),
            plate_id=plate.getId().getValue(), image_ids=image_ids)
        return layout, pixels_ids


def _logical(channel: Any) -> Any:
    return channel.getLogicalChannel() if channel is not None else None
