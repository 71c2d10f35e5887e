"""Synthetic ImageXpress plates with known nuclei counts, for demos, tests and benchmarks.

Channel 1 holds nuclei (ellipses with soft edges); channel 2 a cytoplasmic stain in a
ring around each nucleus, its nucleus/cytoplasm ratio set per well (a translocation
readout); further channels hold speckles. Every plane gets a background, uneven
illumination (a vignette) and noise. With several z planes, planes away from the
focus are blurred; with several timepoints the nuclei multiply. ``ground_truth.csv``
lists the number of nuclei drawn per site: ``well,site,timepoint,nuclei_count``.
Everything is a function of the seed and the site's coordinates, so any site can be
regenerated alone and a plate is identical whatever order it is written in.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import ellipse
from skimage.segmentation import expand_labels

from openhcs_omero_lib.plates import imagexpress
from openhcs_omero_lib.plates.layout import Channel, PlateLayout, Well, parse_well, plate_format, well_name

_CHANNEL_NAMES = ["DAPI", "FITC", "TRITC", "Cy5"]
_WAVELENGTHS = [461.0, 525.0, 590.0, 670.0]
GROUND_TRUTH = "ground_truth.csv"


@dataclass(frozen=True)
class SyntheticPlateConfig:
    """Parameters of a synthetic plate; see :func:`make_plate`."""

    wells: int = 24
    sites: int = 2
    channels: int = 2
    z_planes: int = 1
    timepoints: int = 1
    size: int = 256
    seed: int = 0
    touching: bool = False
    name: str = "SYNTH"
    pixel_size_um: float = 0.65

    def __post_init__(self) -> None:
        for key in ("wells", "sites", "channels", "z_planes", "timepoints"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.channels > len(_CHANNEL_NAMES):
            raise ValueError(f"at most {len(_CHANNEL_NAMES)} channels, got {self.channels}")
        if self.size < 64:
            raise ValueError(f"size must be >= 64 pixels, got {self.size}")


def layout_for(config: SyntheticPlateConfig) -> PlateLayout:
    rows, cols = plate_format(config.wells)
    wells = tuple(Well(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1))[: config.wells]
    return PlateLayout(
        name=config.name, rows=rows, columns=cols, wells=wells, sites=config.sites,
        channels=tuple(Channel(i + 1, _CHANNEL_NAMES[i], _WAVELENGTHS[i]) for i in range(config.channels)),
        z_planes=config.z_planes, timepoints=config.timepoints,
        plane_shape=(config.size, config.size), dtype="uint16", pixel_size_um=config.pixel_size_um)


def _rng(config: SyntheticPlateConfig, *coords: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([config.seed, *coords]))


def _well_params(config: SyntheticPlateConfig, row: int, col: int) -> tuple[float, float]:
    """Per-well density (nuclei per 256x256 site) and nucleus/cytoplasm ratio of channel 2."""
    rng = _rng(config, row, col)
    return float(rng.uniform(15, 45)), float(rng.uniform(0.3, 1.5))


def _place_nuclei(config: SyntheticPlateConfig, rng: np.random.Generator, n: int):
    """Centres, semi-axes and angles of ``n`` nuclei that fit in the plane.

    Without ``touching`` nuclei keep a gap; with it, about half are placed against
    an earlier one so that their outlines merge."""
    size = config.size
    placed: list[tuple[float, float, float, float, float]] = []
    attempts = 0
    while len(placed) < n and attempts < n * 200:
        attempts += 1
        r = rng.uniform(6.0, 8.5)
        a, b = r * rng.uniform(0.85, 1.15), r * rng.uniform(0.85, 1.15)
        if config.touching and placed and rng.random() < 0.5:
            py, px, pa, pb, _ = placed[rng.integers(len(placed))]
            angle = rng.uniform(0, 2 * np.pi)
            # Outlines meet with a small overlap, as touching nuclei do in culture.
            dist = 0.97 * ((a + b) / 2 + (pa + pb) / 2)
            y, x = py + dist * np.sin(angle), px + dist * np.cos(angle)
            tight = 0.95
        else:
            y, x = rng.uniform(0, size, size=2)
            tight = 1.0
        margin = max(a, b) + 3
        if not (margin <= y <= size - margin and margin <= x <= size - margin):
            continue
        ok = True
        for qy, qx, qa, qb, _ in placed:
            need = ((a + b) / 2 + (qa + qb) / 2) * tight if tight < 1 else max(a, b) + max(qa, qb) + 4
            if (y - qy) ** 2 + (x - qx) ** 2 < need ** 2:
                ok = False
                break
        if ok:
            placed.append((y, x, a, b, rng.uniform(0, np.pi)))
    return placed


def site_labels(config: SyntheticPlateConfig, well: str, site: int, timepoint: int) -> np.ndarray:
    """Ground-truth label image of one site (0 = background, 1..N nuclei)."""
    row, col = parse_well(well)
    density, _ = _well_params(config, row, col)
    rng = _rng(config, row, col, site, timepoint)
    area_scale = (config.size / 256) ** 2
    n = int(round(density * area_scale * (1 + 0.15 * (timepoint - 1)) * rng.uniform(0.8, 1.2)))
    labels = np.zeros((config.size, config.size), dtype=np.int32)
    for i, (y, x, a, b, theta) in enumerate(_place_nuclei(config, rng, n), start=1):
        rr, cc = ellipse(y, x, a, b, shape=labels.shape, rotation=theta)
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = i
    return labels


def _dome(labels: np.ndarray) -> np.ndarray:
    """Relative thickness of each nucleus: a stained sphere seen from above is
    brightest at its centre (60% at the rim, 100% in the middle)."""
    inside = ndi.distance_transform_edt(labels > 0)
    peak = ndi.maximum(inside, labels, np.arange(labels.max() + 1))
    depth = np.divide(inside, peak[labels], out=np.zeros_like(inside), where=labels > 0)
    return 0.6 + 0.4 * np.sqrt(np.clip(depth, 0, 1))


def _illumination(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    return 1.0 - 0.35 * (yy ** 2 + (xx - 0.1) ** 2) / 0.5


def render_site(config: SyntheticPlateConfig, well: str, site: int, timepoint: int
                ) -> tuple[dict[tuple[int, int], np.ndarray], int]:
    """Every plane of one site as ``{(channel, z): plane}`` and its nuclei count."""
    row, col = parse_well(well)
    _, ratio = _well_params(config, row, col)
    labels = site_labels(config, well, site, timepoint)
    n = int(labels.max())
    rng = _rng(config, row, col, site, timepoint, 1)
    brightness = np.concatenate([[0.0], rng.uniform(900, 1600, size=n)])
    nuclei = ndi.gaussian_filter(brightness[labels] * _dome(labels), 0.8)
    cells = expand_labels(labels, 6)
    ring = (cells > 0) & (labels == 0)
    stain2 = ndi.gaussian_filter(np.where(ring, 500.0, 0.0) + np.where(labels > 0, 500.0 * ratio, 0.0), 1.0)
    illum = _illumination(config.size)
    focus = (config.z_planes + 1) / 2
    planes: dict[tuple[int, int], np.ndarray] = {}
    for c in range(1, config.channels + 1):
        if c == 1:
            signal = nuclei
        elif c == 2:
            signal = stain2
        else:
            spots = np.zeros(labels.shape)
            idx = rng.integers(0, config.size, size=(200, 2))
            spots[idx[:, 0], idx[:, 1]] = rng.uniform(2000, 6000, size=200)
            signal = ndi.gaussian_filter(spots, 1.5) + 0.2 * nuclei
        for z in range(1, config.z_planes + 1):
            defocus = abs(z - focus)
            img = ndi.gaussian_filter(signal, 1.2 * defocus) * (1 - 0.1 * defocus) if defocus else signal
            img = (img + 200.0) * illum
            img = img + rng.normal(0, 15, size=img.shape)
            planes[(c, z)] = np.clip(img, 0, 65535).astype(np.uint16)
    return planes, n


def make_plate(folder: str | Path, config: SyntheticPlateConfig | None = None,
               thumbnails: bool = True) -> Path:
    """Write a synthetic ImageXpress plate folder and its ``ground_truth.csv``.

    ``folder`` must be empty or absent. Returns the folder."""
    config = config or SyntheticPlateConfig()
    root = Path(folder)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty")
    layout = layout_for(config)
    root.mkdir(parents=True, exist_ok=True)
    imagexpress.write_htd(root / f"{layout.name}.HTD", layout)
    truth = []
    for unit in layout.units():
        planes, n = render_site(config, unit.well, unit.site, unit.timepoint)
        truth.append((unit.well, unit.site, unit.timepoint, n))
        for (c, z), plane in planes.items():
            imagexpress.write_plane(root, layout, unit.well, unit.site, c, z, unit.timepoint, plane,
                                    thumbnail=thumbnails and unit.site == 1 and z == 1)
    with open(root / GROUND_TRUTH, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["well", "site", "timepoint", "nuclei_count"])
        writer.writerows(truth)
    return root


def cache_dir() -> Path:
    """Where generated plates (the demo plate, the benchmark's plates) are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "openhcs-omero"


def write_once(target: Path, marker: str, write: Callable[[Path], None]) -> Path:
    """``target``, written by ``write(folder)`` on first use into a staging folder
    beside it and renamed into place, so a half-written plate is never found;
    ``marker`` is the file whose presence says it is complete."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".plate-", dir=target.parent))
    try:
        write(staging / "plate")
        try:
            (staging / "plate").rename(target)
        except OSError:
            if not (target / marker).exists():  # not a concurrent first run
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_ground_truth(folder: str | Path) -> dict[tuple[str, int, int], int]:
    """``{(well, site, timepoint): nuclei_count}`` from a plate's ``ground_truth.csv``."""
    with open(Path(folder) / GROUND_TRUTH, newline="") as fh:
        return {(r["well"], int(r["site"]), int(r["timepoint"])): int(r["nuclei_count"])
                for r in csv.DictReader(fh)}


__all__ = ["SyntheticPlateConfig", "make_plate", "read_ground_truth", "render_site", "site_labels",
           "layout_for", "well_name"]
