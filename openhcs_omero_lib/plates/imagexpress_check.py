"""Checking an ImageXpress folder's files before a run's results are written.

Reading a folder (:mod:`.imagexpress`) takes its layout from the file names and the
first image; a run reads each file only when its site comes. A broken file found
then costs that site (an error row) after everything before it was computed. The
command line checks the whole folder instead, while the first fields compute (before
anything is said or written), and refuses it with one line naming the first problem:
image names of several prefixes, two files for one image, image files whose names
this version cannot read, an HTD that disagrees with the images (sites, wells,
wavelengths, timepoints), images missing from the layout, and TIFFs that are empty,
truncated, unreadable, or of another size or pixel type than the plate's (of the
channels the run reads, when it says which). The TIFF check reads each file's
header only (a few hundredths of a millisecond per file).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Collection, Iterator

import numpy as np
import tifffile

from openhcs_omero_lib.plates.imagexpress import (
    _FILE_RE,
    ImageXpressSource,
    NotAPlateError,
    find_htd,
    parse_htd,
)
from openhcs_omero_lib.plates.layout import PlateLayout, SiteUnit, parse_well, well_name
from openhcs_omero_lib.plates.tiff_plane import baseline_tiff


def check_plate_folder(source: ImageXpressSource, tiffs: bool = True,
                       channels: Collection[int] | None = None) -> None:
    """Raise :class:`NotAPlateError` (one line) at the first problem found; without
    ``tiffs``, the files' contents are left for the run (a field whose file cannot be
    read becomes an error row). ``channels``: only these channels' files' contents
    are checked (a run's, which reads no other); every file must be there all the same."""
    folder, layout, notes = source.folder, source.layout, source.scan_notes
    # An instrument names every image of a plate with one prefix. Several mean several
    # plates in one folder, or names read wrongly: a newer naming's extra token can look
    # like a well ("..._w1_z01_p01.TIF" reads as well P01 with prefix "..._w1_z01").
    named = [*source._files.values(), *(p for pair in notes.duplicates for p in pair)]
    prefixes = sorted({_FILE_RE.match(p.name)["prefix"] for p in named})
    if len(prefixes) > 1:
        raise NotAPlateError(f"{folder}: its image names start with {len(prefixes)} different prefixes "
                             f"({prefixes[0]!r}, {prefixes[1]!r}, ...): several plates in one folder, or names "
                             "this version reads wrongly (a newer MetaXpress naming?)")
    if notes.duplicates:
        a, b = notes.duplicates[0]
        raise NotAPlateError(f"{folder}: {_rel(folder, a)} and {_rel(folder, b)} are the same image "
                             f"(well, site, wavelength, z and timepoint); remove one")
    # Unreadable names that start like the plate's images are its images, not strays.
    foreign = [p for p in notes.unread if p.name.lower().startswith(prefixes[0].lower() + "_")]
    if foreign:
        raise NotAPlateError(f"{folder}: {len(foreign)} image file(s) whose names this version cannot read, "
                             f"e.g. {_rel(folder, foreign[0])} (a newer MetaXpress naming?)")
    htd_path = find_htd(folder)
    if htd_path is not None:
        _check_htd(folder, htd_path, layout)
    _check_complete(folder, source)
    if tiffs:
        _check_tiffs(folder, source, channels)


def _rel(folder: Path, path: Path) -> str:
    return str(path.relative_to(folder))


def _true(values: list[str]) -> int:
    return sum(v.strip().upper() in ("TRUE", "1") for v in values)


def _check_htd(folder: Path, htd_path: Path, layout: PlateLayout) -> None:
    """The HTD's sites, wells, wavelengths and timepoints, where it states them,
    must be what the images are."""
    htd = parse_htd(htd_path)
    name = htd_path.name
    site_rows = [v for k, v in htd.items() if k.startswith("SiteSelection")]
    if site_rows:
        sites = sum(_true(v) for v in site_rows)
    elif "XSites" in htd and "YSites" in htd:
        sites = _int(htd["XSites"]) * _int(htd["YSites"])
    else:
        sites = None
    if htd.get("Sites", [""])[0].strip().upper() == "FALSE":
        sites = 1
    if sites is not None and sites != layout.sites:
        raise NotAPlateError(f"{folder}: {name} lists {sites} site(s) per well, but the images have "
                             f"{layout.sites}; the acquisition may be incomplete or the folder mixed")
    well_rows = {int(k[len("WellsSelection"):]): v for k, v in htd.items()
                 if k.startswith("WellsSelection") and k[len("WellsSelection"):].isdigit()}
    if well_rows:
        selected = {well_name(r, c) for r, row in well_rows.items()
                    for c, v in enumerate(row, start=1) if v.strip().upper() in ("TRUE", "1")}
        imaged = set(layout.well_names)
        if selected != imaged:
            missing, extra = sorted(selected - imaged, key=parse_well), sorted(imaged - selected, key=parse_well)
            what = []
            if missing:
                what.append(f"no images of {len(missing)} well(s) it selects ({', '.join(missing[:4])}"
                            f"{', ...' if len(missing) > 4 else ''})")
            if extra:
                what.append(f"images of {len(extra)} well(s) it does not select ({', '.join(extra[:4])}"
                            f"{', ...' if len(extra) > 4 else ''})")
            raise NotAPlateError(f"{folder}: {name} selects {len(selected)} well(s), the folder has "
                                 + " and ".join(what))
    collect = [v for k, v in htd.items() if k.startswith("WaveCollect")]
    waves = _true([v[0] for v in collect if v]) if collect else _int(htd.get("NWavelengths"))
    if waves and waves != len(layout.channels):
        raise NotAPlateError(f"{folder}: {name} lists {waves} wavelength(s), the images have "
                             f"{len(layout.channels)}")
    timepoints = _int(htd.get("TimePoints"))
    if timepoints and timepoints != layout.timepoints:
        raise NotAPlateError(f"{folder}: {name} lists {timepoints} timepoint(s), the images have "
                             f"{layout.timepoints}")


def _int(values: list[str] | None) -> int:
    try:
        return int(values[0]) if values else 0
    except ValueError:
        return 0


def _planes(layout: PlateLayout) -> Iterator[tuple[SiteUnit, int, int]]:
    """Every plane of the plate as (unit, channel index, z), in plate order."""
    for unit in layout.units():
        for c in layout.channels:
            for z in range(1, layout.z_planes + 1):
                yield unit, c.index, z


def _check_complete(folder: Path, source: ImageXpressSource) -> None:
    layout = source.layout
    missing = []
    for unit, c, z in _planes(layout):
        try:
            source.path_of(unit.well, unit.site, c, z, unit.timepoint)
        except FileNotFoundError:
            missing.append((unit, c, z))
    if missing:
        unit, c, z = missing[0]
        total = layout.n_units * len(layout.channels) * layout.z_planes
        raise NotAPlateError(f"{folder}: {len(missing)} of {total} images are missing, e.g. well {unit.well} "
                             f"site {unit.site} wavelength {c}" + (f" z {z}" if layout.z_planes > 1 else "")
                             + (f" timepoint {unit.timepoint}" if layout.timepoints > 1 else ""))


def _check_tiffs(folder: Path, source: ImageXpressSource, channels: Collection[int] | None) -> None:
    layout = source.layout
    problems = []
    for unit, c, z in _planes(layout):
        if channels is not None and c not in channels:
            continue
        path = source.path_of(unit.well, unit.site, c, z, unit.timepoint)
        problem = _tiff_problem(path, layout)
        if problem:
            problems.append(f"{_rel(folder, path)} {problem}")
    if problems:
        raise NotAPlateError(f"{folder}: {len(problems)} unusable image file(s): {problems[0]}")


def _tiff_problem(path: Path, layout: PlateLayout) -> str | None:
    size = os.path.getsize(path)
    if size == 0:
        return "is empty (0 bytes)"
    try:
        # A baseline TIFF (MetaXpress's) by its header's few tags: a plate's every file is
        # checked, and tifffile's parse of every tag costs more than reading the pixels.
        with open(path, "rb") as handle:
            info = baseline_tiff(handle.fileno())
    except (OSError, ValueError, struct.error):
        info = None  # tifffile says what is wrong with it
    if info is not None:
        shape, dtype, end = info.shape, info.native_dtype, info.end
    else:
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                shape = tuple(int(s) for s in page.shape[-2:])
                dtype = str(np.dtype(page.dtype))
                end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
        except Exception as exc:  # tifffile raises many kinds for a damaged header
            return f"is not a readable TIFF ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if end > size:
        return f"is truncated ({size} of {end} bytes)"
    if shape != tuple(layout.plane_shape):
        return f"is {shape[1]}x{shape[0]} px, the plate's images are {layout.plane_shape[1]}x{layout.plane_shape[0]}"
    if dtype != layout.dtype:
        return f"holds {dtype} pixels, the plate's images hold {layout.dtype}"
    return None
