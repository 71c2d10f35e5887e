"""The plate layout: what a plate holds, independent of where its pixels live.

A :class:`PlateLayout` is built by a reader (an ImageXpress folder, an OMERO plate)
and consumed by the virtual backend, the executor and the result sinks. Indices
follow the instruments' and OpenHCS's convention: sites, channels (``w``), z and
timepoints are 1-based; well rows and columns are 1-based with rows named by
letters (``A``..``Z``, then ``AA``..``AF`` for 1536-well plates).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

_WELL_RE = re.compile(r"^([A-Za-z]{1,2})(\d{1,3})$")


def row_letters(row: int) -> str:
    """Row number (1-based) to its letters: 1 -> ``A``, 26 -> ``Z``, 27 -> ``AA``."""
    if row < 1:
        raise ValueError(f"row must be >= 1, got {row}")
    if row <= 26:
        return chr(ord("A") + row - 1)
    first, second = divmod(row - 27, 26)
    if first >= 26:
        raise ValueError(f"row {row} is beyond the two-letter range")
    return chr(ord("A") + first) + chr(ord("A") + second)


def row_number(letters: str) -> int:
    """Inverse of :func:`row_letters`."""
    letters = letters.upper()
    if len(letters) == 1:
        return ord(letters) - ord("A") + 1
    return 27 + (ord(letters[0]) - ord("A")) * 26 + (ord(letters[1]) - ord("A"))


def well_name(row: int, column: int) -> str:
    """``(1, 1)`` -> ``A01``; columns are zero-padded to two digits."""
    return f"{row_letters(row)}{column:02d}"


def parse_well(name: str) -> tuple[int, int]:
    """``A01`` -> ``(1, 1)``; raises ValueError on anything else."""
    match = _WELL_RE.match(name)
    if not match:
        raise ValueError(f"not a well name: {name!r} (expected e.g. 'A01')")
    return row_number(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Channel:
    """One acquisition channel (ImageXpress: a wavelength, ``w<index>``)."""

    index: int
    name: str
    emission_wavelength: float | None = None
    excitation_wavelength: float | None = None


@dataclass(frozen=True)
class Well:
    """A well with its position and, where a server knows it, its ID."""

    row: int
    column: int
    id: int | None = None

    @property
    def name(self) -> str:
        return well_name(self.row, self.column)


@dataclass(frozen=True)
class Run:
    """An acquisition run of a plate (OMERO: a PlateAcquisition). Plates imaged more
    than once hold a run per imaging; each run's fields are numbered on their own."""

    id: int | None
    name: str


@dataclass(frozen=True)
class SiteUnit:
    """One unit of work: every channel and z plane of one site at one timepoint, of
    one acquisition run where the plate has runs (``run`` is the run's ID)."""

    well: str
    site: int
    timepoint: int
    run: int | None = None

    @property
    def image_key(self) -> tuple[str, int, int | None]:
        """``(well, site, run)``: the field, whose image holds every timepoint."""
        return self.well, self.site, self.run


@dataclass(frozen=True)
class PlateLayout:
    """Structure of a plate: wells, fields (sites), channels, z planes, timepoints,
    and acquisition runs.

    ``sites`` is the highest field number. ``fields`` holds the ``(well name, site,
    run ID)`` that exist when not every well has every field in every run (a server's
    sparse wells); None means all do. ``runs`` lists the plate's acquisition runs,
    empty for a plate without (local folders). ``image_ids`` maps ``(well name,
    site, run ID)`` to the ID of the image holding that field when the plate lives on
    a server; local plates leave it empty.
    """

    name: str
    rows: int
    columns: int
    wells: tuple[Well, ...]
    sites: int
    channels: tuple[Channel, ...]
    z_planes: int = 1
    timepoints: int = 1
    plane_shape: tuple[int, int] = (0, 0)
    dtype: str = "uint16"
    pixel_size_um: float | None = None
    plate_id: int | None = None
    image_ids: dict[tuple[str, int, int | None], int] = field(default_factory=dict, compare=False, hash=False)
    runs: tuple[Run, ...] = ()
    fields: frozenset[tuple[str, int, int | None]] | None = None

    def __post_init__(self) -> None:
        if not self.wells:
            raise ValueError(f"plate {self.name!r} has no wells")
        for count, what in ((self.sites, "sites"), (self.z_planes, "z planes"),
                            (self.timepoints, "timepoints"), (len(self.channels), "channels")):
            if count < 1:
                raise ValueError(f"plate {self.name!r} has {count} {what}")
        indices = [c.index for c in self.channels]
        if indices != list(range(1, len(indices) + 1)):
            raise ValueError(f"channel indices must be 1..N in order, got {indices}")

    @property
    def well_names(self) -> list[str]:
        return [w.name for w in self.wells]

    def well(self, name: str) -> Well:
        for w in self.wells:
            if w.name == name:
                return w
        raise KeyError(f"plate {self.name!r} has no well {name}")

    def channel(self, key: int | str) -> Channel:
        """A channel by 1-based index or by name (case-insensitive)."""
        for c in self.channels:
            if c.index == key or (isinstance(key, str) and c.name.lower() == key.lower()):
                return c
        raise KeyError(key)

    def run_ids(self) -> list[int | None]:
        """The runs' IDs in plate order; ``[None]`` for a plate without runs."""
        return [r.id for r in self.runs] or [None]

    def run_name(self, run_id: int | None) -> str:
        return next((r.name for r in self.runs if r.id == run_id), "")

    def field_keys(self) -> Iterator[tuple[str, int, int | None]]:
        """Every field as ``(well, site, run)``, in plate order: run, well, site."""
        for run in self.run_ids():
            for w in self.wells:
                for site in range(1, self.sites + 1):
                    if self.fields is None or (w.name, site, run) in self.fields:
                        yield w.name, site, run

    def units(self) -> Iterator[SiteUnit]:
        """Units of work in plate order: run, well, site, then timepoint. Each run is
        measured on its own; a field a well lacks is no unit."""
        for well, site, run in self.field_keys():
            for t in range(1, self.timepoints + 1):
                yield SiteUnit(well, site, t, run)

    @property
    def n_fields(self) -> int:
        if self.fields is not None:
            return len(self.fields)
        return len(self.wells) * self.sites * len(self.run_ids())

    @property
    def n_units(self) -> int:
        return self.n_fields * self.timepoints

    @property
    def n_planes(self) -> int:
        return self.n_units * len(self.channels) * self.z_planes

    def describe(self) -> str:
        chans = ", ".join(f"w{c.index}={c.name}" for c in self.channels)
        y, x = self.plane_shape
        size = f", {self.pixel_size_um} um/px" if self.pixel_size_um else ""
        runs = ""
        if self.runs:
            runs = f", {len(self.runs)} run{'s' if len(self.runs) != 1 else ''} [" + ", ".join(
                f"{r.id}={r.name}" for r in self.runs) + "]"
        full = len(self.wells) * self.sites * len(self.run_ids())
        sparse = f" ({self.n_fields} of {full} fields present)" if self.n_fields != full else ""
        return (f"plate {self.name!r}: {len(self.wells)} wells ({self.rows}x{self.columns} format), "
                f"{self.sites} sites{sparse}{runs}, channels [{chans}], {self.z_planes} z, {self.timepoints} t, "
                f"planes {y}x{x} {self.dtype}{size}")


def plate_format(n_wells: int) -> tuple[int, int]:
    """Rows and columns of the standard plate that holds ``n_wells`` wells."""
    for rows, cols in ((2, 3), (4, 6), (8, 12), (16, 24), (32, 48)):
        if n_wells <= rows * cols:
            return rows, cols
    raise ValueError(f"{n_wells} wells is more than a 1536-well plate holds")
