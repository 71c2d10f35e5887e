"""Virtual backend: ImageXpress-style names for every plane of a plate, both ways.

Pipelines written for files (OpenHCS, MetaXpress exports) address planes as
``A01_s001_w1_z001_t001.tif`` under a plate folder. A plate held by OMERO has no
such files; this backend generates the names from the :class:`PlateLayout` and
parses them back to coordinates, so file-based tooling and logs can speak the same
language whatever the storage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from openhcs_omero_lib.plates.layout import PlateLayout, parse_well, well_name

_NAME_RE = re.compile(
    r"^(?P<well>[A-Z]{1,2}\d{2,3})_s(?P<site>\d+)_w(?P<channel>\d+)"
    r"_z(?P<z>\d+)_t(?P<t>\d+)\.tif$"
)


@dataclass(frozen=True, order=True)
class PlaneCoord:
    """Address of one 2-D plane; every index is 1-based."""

    well: str
    site: int
    channel: int
    z: int = 1
    t: int = 1


def plane_filename(coord: PlaneCoord) -> str:
    """``PlaneCoord('A01', 1, 1, 1, 1)`` -> ``A01_s001_w1_z001_t001.tif``."""
    return f"{coord.well}_s{coord.site:03d}_w{coord.channel}_z{coord.z:03d}_t{coord.t:03d}.tif"


def parse_plane_filename(name: str) -> PlaneCoord:
    """Inverse of :func:`plane_filename`; raises ValueError on a foreign name."""
    match = _NAME_RE.match(name)
    if not match:
        raise ValueError(f"not a virtual plane name: {name!r} (expected e.g. 'A01_s001_w1_z001_t001.tif')")
    row, col = parse_well(match["well"])
    return PlaneCoord(well_name(row, col), int(match["site"]), int(match["channel"]),
                      int(match["z"]), int(match["t"]))


class VirtualBackend:
    """Filenames and paths generated from a layout, checked against it when parsed.

    ``root`` defaults to ``/omero/plate_{id}`` for plates with a server ID and to
    ``/plates/{name}`` for local ones.
    """

    def __init__(self, layout: PlateLayout, root: str | None = None):
        self.layout = layout
        if root is None:
            root = (f"/omero/plate_{layout.plate_id}" if layout.plate_id is not None
                    else f"/plates/{layout.name}")
        self.root = root.rstrip("/")
        self._wells = set(layout.well_names)

    def filename(self, coord: PlaneCoord) -> str:
        self._check(coord)
        return plane_filename(coord)

    def path(self, coord: PlaneCoord) -> str:
        return f"{self.root}/{self.filename(coord)}"

    def parse(self, name_or_path: str) -> PlaneCoord:
        """Coordinates of a name or a path under this backend's root."""
        directory, _, name = name_or_path.rpartition("/")
        if directory and directory != self.root:
            raise ValueError(f"{name_or_path!r} is not under {self.root}")
        coord = parse_plane_filename(name)
        self._check(coord)
        return coord

    def coords(self) -> Iterator[PlaneCoord]:
        """Every plane, in plate order (well, site, t, z, channel)."""
        lay = self.layout
        for unit in lay.units():
            for z in range(1, lay.z_planes + 1):
                for c in lay.channels:
                    yield PlaneCoord(unit.well, unit.site, c.index, z, unit.timepoint)

    def list_files(self) -> Iterator[str]:
        return (self.path(c) for c in self.coords())

    def _check(self, coord: PlaneCoord) -> None:
        lay = self.layout
        problems = []
        if coord.well not in self._wells:
            problems.append(f"well {coord.well}")
        if not 1 <= coord.site <= lay.sites:
            problems.append(f"site {coord.site} (1..{lay.sites})")
        if not 1 <= coord.channel <= len(lay.channels):
            problems.append(f"channel {coord.channel} (1..{len(lay.channels)})")
        if not 1 <= coord.z <= lay.z_planes:
            problems.append(f"z {coord.z} (1..{lay.z_planes})")
        if not 1 <= coord.t <= lay.timepoints:
            problems.append(f"timepoint {coord.t} (1..{lay.timepoints})")
        if problems:
            raise ValueError(f"plate {lay.name!r} has no " + ", ".join(problems))
