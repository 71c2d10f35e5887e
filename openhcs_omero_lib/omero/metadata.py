"""How OMERO's answers become a :class:`~openhcs_omero_lib.plates.layout.PlateLayout`, and
what a notebook asks of a plate.

:class:`OMEROMetadataHandler` is the extension point for plates whose metadata needs
interpreting: subclass it and override a hook, then pass an instance to
:func:`~openhcs_omero_lib.omero.plate.load_plate` (or to ``run_pipeline``). Given a
connection, it also answers the questions OpenHCS's metadata handlers answer, each as
a list of plain values read from the plate's one cached layout (three queries the
first time, then one while the plate is unchanged, whichever question comes next)::

    meta = OMEROMetadataHandler(conn)
    meta.get_channel_values(51)      # ['DAPI', 'GFP']: channel names, channel 1 first
    meta.get_well_values(51)         # ['A01', 'A02', ...]
    meta.get_site_values(51)         # [1, 2]: field numbers
    meta.get_z_index_values(51)      # [1, 2, 3]
    meta.get_timepoint_values(51)    # [1]
    meta.get_custom_metadata(51)     # {}: for subclasses

A plate is given by ID, as ``"Plate:51"``, as ``/omero/plate_51`` or as an object.
For example, a facility whose channel names live in a naming convention rather than
in OMERO::

    class ByWavelength(OMEROMetadataHandler):
        def channel_name(self, index, logical_channel):
            wave = self.emission_wavelength(logical_channel)
            return {461: "DAPI", 525: "GFP"}.get(round(wave or 0), f"w{index}")

The handler sees what the layout queries fetched: the plate's name and format, one
:class:`FieldRow` of plain IDs and positions per well and field (not model objects:
a 1536-well plate's layout must not cost the script hundreds of megabytes), and one
image's pixels (``omero.model.Pixels`` with its pixels type) and channels with their
logical channels.

Fields are numbered as OMERO numbers them: by their index in the well's ordered list
of well samples (omero-model ``mappings/screen.ome.xml``), not by ID, so a well that
lacks a field keeps the numbers of the others. On a plate imaged in several runs
(PlateAcquisitions) the fields of all runs share the well's list; each run's fields
are numbered from that run's lowest index on the plate, as omero-py's
``PlateWrapper.getNumberOfFields(run)`` gives the run's range, and every run is
measured on its own.
"""

from __future__ import annotations

from typing import Any, Collection

from openhcs_omero_lib.omero.layout_rules import FieldRow, LayoutRules, PlateSummary
from openhcs_omero_lib.omero.plate import CACHE, load_plate
from openhcs_omero_lib.omero.targets import plate_id_of
from openhcs_omero_lib.plates.layout import PlateLayout

__all__ = ["FieldRow", "OMEROMetadataHandler", "PlateSummary"]


class OMEROMetadataHandler(LayoutRules):
    """Default interpretation of OMERO's HCS model; override hooks to change it.

    ``conn`` (a BlitzGateway) is needed only by the ``get_*`` questions. Layouts are
    kept in the process-wide cache of :mod:`.plate` (``cache``: another
    :class:`~.plate.PlateCache`, or None for none), one per plate and handler class,
    and used while the plate is unchanged. A subclass whose interpretation depends on
    its instance's settings should say so in its class (one class per interpretation)."""

    def __init__(self, conn: Any = None, *, cache: Any = "shared"):
        self.conn = conn
        self._cache = cache

    # ---- what a notebook asks ------------------------------------------------------------------

    def plate(self, plate: Any, runs: Collection[int] | None = None):
        """The plate's :class:`~.plate.OmeroPlate` (layout, group, IDs), from the cache
        while the plate is unchanged; with ``runs``, of those acquisition runs only."""
        if self.conn is None:
            raise ValueError(f"{type(self).__name__}(conn): give it a connection to ask about plates")
        cache = CACHE if isinstance(self._cache, str) else self._cache
        return load_plate(self.conn, plate_id_of(plate), self, cache=cache,
                          runs=frozenset(runs) if runs is not None else None)

    def layout(self, plate: Any) -> PlateLayout:
        return self.plate(plate).layout

    def get_channel_values(self, plate: Any) -> list[str]:
        """Channel names, channel 1 first (a channel's index is its position + 1)."""
        return [c.name for c in self.layout(plate).channels]

    def get_z_index_values(self, plate: Any) -> list[int]:
        return list(range(1, self.layout(plate).z_planes + 1))

    def get_timepoint_values(self, plate: Any) -> list[int]:
        return list(range(1, self.layout(plate).timepoints + 1))

    def get_site_values(self, plate: Any) -> list[int]:
        """Field numbers that some well has (numbered as in :meth:`site_of`)."""
        layout = self.layout(plate)
        if layout.fields is None:
            return list(range(1, layout.sites + 1))
        return sorted({site for _, site, _ in layout.fields})

    def get_well_values(self, plate: Any) -> list[str]:
        """Well names (``A01``), in plate order: row by row."""
        return self.layout(plate).well_names

    def get_custom_metadata(self, plate: Any) -> dict[str, Any]:
        """Whatever else a facility keeps about its plates; empty here, for subclasses
        (they may use :meth:`layout` and ``self.conn``)."""
        return {}
