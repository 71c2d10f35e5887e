"""ImageXpress (MetaXpress) plate folders: detect, read one plane at a time, write.

What instruments write, and what this module accepts:

- ``<plate>.HTD``: plate format, wavelength names, well and site selection.
- ``<prefix>_<well>_s<site>_w<wave><GUID>.TIF``; ``_s`` is omitted when the plate has
  one site and ``_w`` when it has one wavelength; the GUID is optional.
- ``TimePoint_<n>/`` folders, and ``ZStep_<n>/`` folders inside them for z series
  (files may also sit at the top level when there is one timepoint).
- ``*_thumb*`` files are previews and are ignored.
- Pixel size and wavelength come from the MetaSeries XML in the TIFF description
  (``spatial-calibration-x``, ``wavelength``) when present.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import tifffile

from openhcs_omero_lib.plates.layout import Channel, PlateLayout, Well, parse_well, plate_format, well_name
from openhcs_omero_lib.plates.pixels import PixelSource, SourceSpec
from openhcs_omero_lib.plates.tiff_plane import baseline_plane

_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_FILE_RE = re.compile(
    r"^(?P<prefix>.*?)_(?P<well>[A-Za-z]{1,2}\d{2})"
    r"(?:_s(?P<site>\d+))?"
    # A GUID may follow the wavelength directly, so a digit after _w<d> can be the GUID's.
    r"(?:_w(?:(?P<wave_guid>\d)(?=" + _GUID + r")|(?P<wave>\d+)))?"
    r"(?P<rest>(?:_thumb)?(?:" + _GUID + r")?)\.tiff?$",
    re.IGNORECASE,
)
_TIMEPOINT_RE = re.compile(r"^TimePoint_(\d+)$", re.IGNORECASE)
_ZSTEP_RE = re.compile(r"^ZStep_(\d+)$", re.IGNORECASE)


class NotAPlateError(ValueError):
    """The folder is not an ImageXpress plate."""


@dataclass(frozen=True, order=True)
class _FileKey:
    well: str
    site: int
    channel: int
    z: int
    t: int


def parse_htd(path: Path) -> dict[str, list[str]]:
    """An HTD file as ``{key: [values]}``, quotes removed."""
    entries: dict[str, list[str]] = {}
    for line in path.read_text(errors="replace").splitlines():
        parts = [p.strip().strip('"') for p in line.split(",")]
        if parts and parts[0]:
            entries[parts[0]] = parts[1:]
    return entries


def parse_image_filename(name: str) -> tuple[str, int | None, int | None] | None:
    """``(well, site, wavelength)`` of an image file name; None for thumbnails and
    foreign files. ``site``/``wavelength`` are None where the name omits them."""
    match = _FILE_RE.match(name)
    if not match or "_thumb" in name.lower():
        return None
    row, col = parse_well(match["well"])
    wave = match["wave_guid"] or match["wave"]
    return (well_name(row, col), int(match["site"]) if match["site"] else None,
            int(wave) if wave else None)


def find_htd(folder: Path) -> Path | None:
    htds = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".htd" and p.is_file())
    return htds[0] if htds else None


@dataclass
class ScanNotes:
    """What a scan of a folder set aside: files of the same coordinates (the later
    one is used) and TIFF files whose names it could not read."""

    duplicates: list[tuple[Path, Path]]
    unread: list[Path]


def _scan(folder: Path, notes: ScanNotes | None = None) -> dict[_FileKey, Path]:
    """Index every image file under ``folder`` by its coordinates."""
    files: dict[_FileKey, Path] = {}

    def add_dir(directory: Path, t: int, z: int) -> None:
        for entry in os.scandir(directory):
            if not entry.is_file():
                continue
            parsed = parse_image_filename(entry.name)
            if parsed is None:
                if notes is not None and entry.name.lower().endswith((".tif", ".tiff")) \
                        and "_thumb" not in entry.name.lower():
                    notes.unread.append(Path(entry.path))
                continue
            well, site, wave = parsed
            key = _FileKey(well, site or 1, wave or 1, z, t)
            if notes is not None and key in files:
                notes.duplicates.append((files[key], Path(entry.path)))
            files[key] = Path(entry.path)

    def subfolders(directory: Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
        # Names first: a timepoint folder holds thousands of images, and scandir's
        # entries know whether they are folders without a stat each.
        with os.scandir(directory) as entries:
            return [(int(m.group(1)), Path(e.path)) for e in entries
                    if (m := pattern.match(e.name)) and e.is_dir()]

    timepoint_dirs = subfolders(folder, _TIMEPOINT_RE)
    if not timepoint_dirs:
        timepoint_dirs = [(1, folder)]
    for t, tdir in sorted(timepoint_dirs):
        zdirs = subfolders(tdir, _ZSTEP_RE)
        if zdirs:
            for z, zdir in sorted(zdirs):
                add_dir(zdir, t, z)
        else:
            add_dir(tdir, t, 1)
    return files


def index_files(paths: Iterable[str], strict: bool = False) -> dict[_FileKey, str]:
    """Image files of a plate folder, given as ``/``-separated paths relative to the
    folder (as a folder is listed, or as an OMERO fileset lists its files), indexed by
    their coordinates. The folders count as an instrument writes them:
    ``TimePoint_<n>/`` (without any, the folder itself is timepoint 1) and
    ``ZStep_<m>/`` inside it (without any, its own files are z 1); other files and
    folders are not images of the plate. With ``strict`` two files of the same
    coordinates raise ValueError; otherwise the last one listed is kept."""
    parsed = []
    for path in paths:
        *dirs, name = path.split("/")
        coords = parse_image_filename(name)
        if coords is not None and len(dirs) <= 2:
            parsed.append((dirs, coords, path))
    with_timepoints = any(dirs and _TIMEPOINT_RE.match(dirs[0]) for dirs, _, _ in parsed)
    # a folder that has ZStep folders holds its images there, not beside them
    z_parents = {"/".join(dirs[:-1]) for dirs, _, _ in parsed if dirs and _ZSTEP_RE.match(dirs[-1])}
    files: dict[_FileKey, str] = {}
    for dirs, (well, site, wave), path in parsed:
        t = z = 1
        t_dirs = dirs
        if dirs and _ZSTEP_RE.match(dirs[-1]):
            z = int(_ZSTEP_RE.match(dirs[-1]).group(1))  # type: ignore[union-attr]
            t_dirs = dirs[:-1]
        elif "/".join(dirs) in z_parents:
            continue
        if with_timepoints:
            if len(t_dirs) != 1 or not _TIMEPOINT_RE.match(t_dirs[0]):
                continue
            t = int(_TIMEPOINT_RE.match(t_dirs[0]).group(1))  # type: ignore[union-attr]
        elif t_dirs:
            continue
        key = _FileKey(well, site or 1, wave or 1, z, t)
        if strict and key in files:
            raise ValueError(f"two files for well {well} site {key.site} w{key.channel} z{z} t{t}: "
                             f"{files[key]} and {path}")
        files[key] = path
    return files


def _tiff_info(path: Path) -> tuple[tuple[int, int], str, dict[str, str]]:
    """Shape, dtype and MetaSeries properties of a TIFF's first page, without pixels."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        shape = tuple(int(s) for s in page.shape[-2:])
        dtype = str(np.dtype(page.dtype))
        description = page.description or ""
    props: dict[str, str] = {}
    if description.lstrip().startswith("<MetaData>"):
        try:
            for prop in ET.fromstring(description).iter("prop"):
                props[prop.get("id", "")] = prop.get("value", "")
        except ET.ParseError:
            pass
    return shape, dtype, props  # type: ignore[return-value]


def _readable_tiff_info(folder: Path, path: Path) -> tuple[tuple[int, int], str, dict[str, str]]:
    try:
        return _tiff_info(path)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise NotAPlateError(f"{folder}: {path.relative_to(folder)} is not a readable TIFF "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def read_layout(folder: str | os.PathLike, notes: ScanNotes | None = None
                ) -> tuple[PlateLayout, dict[_FileKey, Path]]:
    """Layout of an ImageXpress folder and the index of its files; ``notes``, if
    given, receives what the scan set aside."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAPlateError(f"{folder} is not a folder")
    htd_path = find_htd(folder)
    notes = notes if notes is not None else ScanNotes([], [])
    files = _scan(folder, notes)
    if not files:
        why = "it has an .HTD file but no images" if htd_path else \
            "no .HTD file and no <prefix>_<well>_s<n>_w<n>.TIF images"
        if notes.unread:
            why += (f" whose names this version reads ({len(notes.unread)} .TIF files such as "
                    f"{notes.unread[0].name!r}: a newer MetaXpress naming?)")
        raise NotAPlateError(f"{folder} is not an ImageXpress plate folder: {why}")
    htd = parse_htd(htd_path) if htd_path else {}

    well_names = sorted({k.well for k in files}, key=parse_well)
    n_channels = max(k.channel for k in files)
    rows_cols = plate_format(len(well_names))
    if "YWells" in htd and "XWells" in htd:
        rows_cols = (int(htd["YWells"][0]), int(htd["XWells"][0]))
    max_row = max(parse_well(w)[0] for w in well_names)
    max_col = max(parse_well(w)[1] for w in well_names)
    rows_cols = (max(rows_cols[0], max_row), max(rows_cols[1], max_col))

    first = min(files)  # well/site/channel/z/t order
    shape, dtype, _ = _readable_tiff_info(folder, files[first])
    channels = []
    pixel_size = None
    for c in range(1, n_channels + 1):
        key = min((k for k in files if k.channel == c), default=None)  # its first file, without sorting all
        props = _readable_tiff_info(folder, files[key])[2] if key else {}
        name = (htd.get(f"WaveName{c}") or [""])[0] or props.get("image-name") or f"w{c}"
        channels.append(Channel(c, name, emission_wavelength=_float(props.get("wavelength"))))
        pixel_size = pixel_size or _float(props.get("spatial-calibration-x"))

    layout = PlateLayout(
        name=htd_path.stem if htd_path else folder.name,
        rows=rows_cols[0],
        columns=rows_cols[1],
        wells=tuple(Well(*parse_well(w)) for w in well_names),
        sites=max(k.site for k in files),
        channels=tuple(channels),
        z_planes=max(k.z for k in files),
        timepoints=max(k.t for k in files),
        plane_shape=shape,
        dtype=dtype,
        pixel_size_um=pixel_size,
    )
    return layout, files


def is_plate_folder(folder: str | os.PathLike) -> bool:
    try:
        read_layout(folder)
    except (NotAPlateError, OSError):
        return False
    return True


class ImageXpressSource(PixelSource):
    """Planes of a local ImageXpress folder, read one at a time (baseline TIFFs by
    their header, any other through tifffile)."""

    read_ahead = False
    fork_safe = True

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).resolve()
        # Kept for the check of the folder (:mod:`.imagexpress_check`): no second scan.
        self.scan_notes = ScanNotes([], [])
        self.layout, self._files = read_layout(self.folder, self.scan_notes)

    @classmethod
    def from_spec(cls, spec: SourceSpec) -> ImageXpressSource:
        return cls(spec.params["folder"])

    def spec(self) -> SourceSpec:
        return SourceSpec("imagexpress", {"folder": str(self.folder)})

    def path_of(self, well: str, site: int, channel: int, z: int = 1, t: int = 1) -> Path:
        try:
            return self._files[_FileKey(well, site, channel, z, t)]
        except KeyError:
            raise FileNotFoundError(
                f"plate {self.layout.name!r} has no image for well {well} site {site} "
                f"w{channel} z{z} t{t}") from None

    def read_plane(self, well: str, site: int, channel: int, z: int = 1, t: int = 1,
                   run: int | None = None) -> np.ndarray:
        if run is not None:
            raise FileNotFoundError(f"plate {self.layout.name!r} is a folder: it has no acquisition run {run}")
        path = self.path_of(well, site, channel, z, t)
        with open(path, "rb") as handle:
            # MetaXpress writes baseline TIFFs: read by their header and one read (tifffile
            # parses every tag of every file, a large part of a small field's time).
            plane = baseline_plane(handle.fileno(), self.layout.plane_shape, self.layout.dtype)
            if plane is not None:
                return plane
            plane = tifffile.imread(handle, key=0)
        if plane.ndim != 2 or plane.shape != tuple(self.layout.plane_shape):
            raise ValueError(f"{self.path_of(well, site, channel, z, t).name}: expected a 2-D plane of "
                             f"{tuple(self.layout.plane_shape)}, got shape {plane.shape}")
        return plane


# ---- writing -------------------------------------------------------------------

def _metaseries_description(pixel_size_um: float, wavelength: float | None, name: str) -> str:
    props = [("spatial-calibration-x", "float", pixel_size_um),
             ("spatial-calibration-y", "float", pixel_size_um),
             ("spatial-calibration-units", "string", "um"),
             ("image-name", "string", name)]
    if wavelength is not None:
        props.append(("wavelength", "int", int(wavelength)))
    body = "".join(f'<prop id="{i}" type="{t}" value="{v}"/>' for i, t, v in props)
    return f"<MetaData><PlaneInfo>{body}</PlaneInfo><SetInfo></SetInfo></MetaData>"


def write_htd(path: Path, layout: PlateLayout) -> None:
    """An HTD file as MetaXpress writes it, for the given layout."""
    present = {(w.row, w.column) for w in layout.wells}
    side = int(round(layout.sites ** 0.5))
    xsites, ysites = (side, side) if side * side == layout.sites else (layout.sites, 1)
    lines = ['"HTSInfoFile", Version 1.0', f'"Description", "{layout.name}"', '"PlateType", 6',
             f'"TimePoints", {layout.timepoints}',
             f'"ZSeries", {"TRUE" if layout.z_planes > 1 else "FALSE"}',
             f'"Waves", {"TRUE" if len(layout.channels) > 1 else "FALSE"}',
             f'"NWavelengths", {len(layout.channels)}']
    lines += [f'"WaveName{c.index}", "{c.name}"' for c in layout.channels]
    lines += [f'"WaveCollect{c.index}", 1' for c in layout.channels]
    lines += [f'"XWells", {layout.columns}', f'"YWells", {layout.rows}']
    for r in range(1, layout.rows + 1):
        sel = ", ".join("TRUE" if (r, c) in present else "FALSE" for c in range(1, layout.columns + 1))
        lines.append(f'"WellsSelection{r}", {sel}')
    lines += [f'"Sites", {"TRUE" if layout.sites > 1 else "FALSE"}',
              f'"XSites", {xsites}', f'"YSites", {ysites}']
    lines += [f'"SiteSelection{r}", ' + ", ".join(["TRUE"] * xsites) for r in range(1, ysites + 1)]
    lines += ['"UniquePlateIdentifier", "' + layout.name + '"', '"EndFile"']
    path.write_text("\r\n".join(lines) + "\r\n")


def image_filename(layout: PlateLayout, well: str, site: int, channel: int) -> str:
    """The instrument's name for a plane: ``_s``/``_w`` only where the plate has several."""
    name = f"{layout.name}_{well}"
    if layout.sites > 1:
        name += f"_s{site}"
    if len(layout.channels) > 1:
        name += f"_w{channel}"
    return name + ".TIF"


def plane_dir(root: Path, layout: PlateLayout, z: int, t: int) -> Path:
    directory = root / f"TimePoint_{t}"
    if layout.z_planes > 1:
        directory = directory / f"ZStep_{z}"
    return directory


def write_plane(root: Path, layout: PlateLayout, well: str, site: int, channel: int, z: int, t: int,
                plane: np.ndarray, thumbnail: bool = False) -> Path:
    """Write one plane where an instrument would, with MetaSeries metadata."""
    directory = plane_dir(root, layout, z, t)
    directory.mkdir(parents=True, exist_ok=True)
    chan = layout.channels[channel - 1]
    path = directory / image_filename(layout, well, site, channel)
    tifffile.imwrite(path, plane, description=_metaseries_description(
        layout.pixel_size_um or 1.0, chan.emission_wavelength, chan.name), metadata=None)
    if thumbnail:
        thumb = plane[::4, ::4]
        tifffile.imwrite(path.with_name(path.stem + "_thumb" + path.suffix), thumb, metadata=None)
    return path
