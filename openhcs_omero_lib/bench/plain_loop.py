"""The plain loop: what a careful script does on a local plate without this package.

    python -m openhcs_omero_lib.bench.plain_loop PLATE_FOLDER --workers N --out FILE.csv

It finds channel 1's files with a glob, reads each with tifffile and runs the
benchmark's simple pipeline (:data:`SIMPLE_PIPELINE`: Gaussian, Otsu threshold, small
objects removed, connected components counted) with the same scipy and
scikit-image calls that the library's operations make, one field after another or
in a ``multiprocessing.Pool`` of N processes (``fork``, as a script would). It writes
one CSV line per field. ``openhcs-omero run`` on the same plate and pipeline is
measured against it, whole process against whole process.

It imports nothing from this package at run time, so that its start-up is a plain
script's: numpy, scipy, scikit-image and tifffile.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import re
import sys
from pathlib import Path

SIGMA, MIN_SIZE = 1.0, 40

SIMPLE_PIPELINE = f"""\
name: simple_count
description: Nuclei counted in channel 1 (the benchmark's plain-loop comparison).
load:
  channels: [1]
  z: max
steps:
  - op: gaussian
    input: ch1
    output: smooth
    sigma: {SIGMA}
  - op: threshold
    input: smooth
    output: mask
    method: otsu
  - op: remove_small_objects
    input: mask
    output: mask
    min_size: {MIN_SIZE}
  - op: label
    input: mask
    output: nuclei
  - op: measure_objects
    labels: nuclei
"""
"""The pipeline both sides run, as a spec for ``openhcs-omero run``."""

_NAME = re.compile(r"_(?P<well>[A-Z]{1,2}\d{2})(?:_s(?P<site>\d+))?_w1\.tiff?$", re.IGNORECASE)


def count_nuclei(path: str) -> int:
    import numpy as np
    import tifffile
    from scipy import ndimage as ndi
    from skimage import filters

    image = tifffile.imread(path).astype(np.float32)
    smooth = ndi.gaussian_filter(image, SIGMA)
    mask = smooth > filters.threshold_otsu(smooth)
    components, _ = ndi.label(mask)
    keep = np.bincount(components.ravel()) >= MIN_SIZE
    keep[0] = False
    _, count = ndi.label(keep[components])
    return int(count)


def fields(folder: Path) -> list[tuple[str, int, str]]:
    """``(well, site, path)`` of every channel-1 file, in plate order."""
    found = []
    for path in (folder / "TimePoint_1").iterdir():
        match = _NAME.search(path.name)
        if match:
            found.append((match["well"], int(match["site"] or 1), str(path)))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plate")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    todo = fields(Path(args.plate))
    paths = [path for _, _, path in todo]
    if args.workers == 1:
        counts = [count_nuclei(path) for path in paths]
    else:
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            counts = pool.map(count_nuclei, paths)
    with open(args.out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["well", "site", "nuclei_count"])
        writer.writerows((well, site, n) for (well, site, _), n in zip(todo, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
