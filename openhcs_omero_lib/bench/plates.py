"""The benchmark's plates: synthetic ImageXpress folders, generated once and cached.

Rendering every site of a 384-well plate takes minutes, so a plate holds a handful of
rendered sites (:data:`DISTINCT_SITES`) and every other field is a hard link to one of
them, chosen by its position: the pipeline's work per site is realistic (real nuclei,
different counts) and the plate is written in seconds. Each run reads every field's
files through its own path, as it would on a real plate.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from openhcs_omero_lib.plates import imagexpress, synthetic

VERSION = 1
"""Bumped when the plates change, so that an old cache is not reused."""

DISTINCT_SITES = 12


@dataclass(frozen=True)
class PlateSpec:
    wells: int
    sites: int = 2
    channels: int = 2
    size: int = 160
    seed: int = 7

    @property
    def name(self) -> str:
        return f"BENCH{self.wells}"

    @property
    def units(self) -> int:
        return self.wells * self.sites

    def describe(self) -> str:
        return f"{self.wells} wells x {self.sites} sites x {self.channels} channels, {self.size}x{self.size} px"

    def key(self) -> str:
        return f"v{VERSION}-w{self.wells}-s{self.sites}-c{self.channels}-p{self.size}-r{self.seed}"


DEFAULT_REALISTIC = "24,2,3,1024"
"""Wells, sites, channels and plane size of the direct-reads benchmark's plate of realistic planes"""


def realistic_spec(text: str) -> PlateSpec | None:
    """``WELLS,SITES,CHANNELS,PLANE`` (or ``none``) -> the plate of realistic planes."""
    if text.strip().lower() == "none":
        return None
    try:
        wells, sites, channels, plane = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"expected WELLS,SITES,CHANNELS,PLANE or none, got {text!r}") from None
    if min(wells, sites, channels) < 1 or not 1 <= channels <= 4 or plane < 64:
        raise ValueError(f"expected at least 1 well and site, 1-4 channels and planes of 64 px or more, got {text!r}")
    return PlateSpec(wells, sites, channels, plane)


def default_cache() -> Path:
    from openhcs_omero_lib.plates.synthetic import cache_dir

    return cache_dir() / "bench-plates"


def plate_folder(spec: PlateSpec, cache: Path | None = None) -> Path:
    """The plate's folder, written on first use (atomically: a half-written plate is
    never found in the cache)."""
    target = (cache or default_cache()) / spec.key()
    return synthetic.write_once(target, f"{spec.name}.HTD", lambda folder: write_plate(folder, spec))


def write_plate(folder: Path, spec: PlateSpec) -> None:
    config = synthetic.SyntheticPlateConfig(wells=spec.wells, sites=spec.sites, channels=spec.channels,
                                            size=spec.size, seed=spec.seed, touching=True, name=spec.name)
    layout = synthetic.layout_for(config)
    folder.mkdir(parents=True)
    _write_htd(folder / f"{spec.name}.HTD", layout)
    rendered: dict[int, dict[int, Path]] = {}
    for n, unit in enumerate(layout.units()):
        slot = n % DISTINCT_SITES
        if slot not in rendered:
            planes, _ = synthetic.render_site(config, unit.well, unit.site, unit.timepoint)
            rendered[slot] = {c: imagexpress.write_plane(folder, layout, unit.well, unit.site, c, 1,
                                                         unit.timepoint, planes[(c, 1)])
                              for c in range(1, spec.channels + 1)}
            continue
        for c, original in rendered[slot].items():
            path = imagexpress.plane_dir(folder, layout, 1, unit.timepoint) / \
                imagexpress.image_filename(layout, unit.well, unit.site, c)
            try:
                os.link(original, path)
            except OSError:  # a file system without hard links
                shutil.copyfile(original, path)


def _write_htd(path: Path, layout) -> None:
    """The plate's HTD, with the pixel size that OpenHCS's ImageXpress reader requires
    (MetaXpress leaves it to the images; OpenHCS looks for it in the HTD)."""
    imagexpress.write_htd(path, layout)
    text = path.read_bytes().decode()
    path.write_bytes(text.replace('"EndFile"', f'"PixelSizeUM", {layout.pixel_size_um}\r\n"EndFile"').encode())


def link_copy(folder: Path, target: Path) -> Path:
    """A copy of a plate folder for a tool that writes into the folder it reads
    (OpenHCS adds its metadata): images are hard links, every other file a real copy,
    so that nothing written there can change the cached plate."""
    shutil.copytree(folder, target, copy_function=_link_images)
    return target


def _link_images(src: str, dst: str) -> None:
    if src.lower().endswith((".tif", ".tiff")):
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)
