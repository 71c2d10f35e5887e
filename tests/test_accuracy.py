"""Acceptance: the presets measure what the synthetic plates were generated with.

nuclei_count must count within 5% of ``ground_truth.csv`` on at least 95% of sites;
nuclear_translocation must rank wells by the generator's nucleus/cytoplasm ratio.
"""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from skimage.measure import label

from openhcs_omero_lib import engine
from openhcs_omero_lib.pipeline.loading import parse_spec, preset_text
from openhcs_omero_lib.plates import synthetic
from openhcs_omero_lib.plates.imagexpress import ImageXpressSource
from openhcs_omero_lib.plates.layout import parse_well


def _run(plate, preset: str):
    with ImageXpressSource(plate.folder) as source:
        return engine.run_pipeline(source, parse_spec(preset_text(preset), preset), workers=1)


def _ground_truth(folder) -> dict[tuple[str, int, int], int]:
    """ground_truth.csv read with the csv module (not the library's reader)."""
    with open(folder / "ground_truth.csv", newline="") as fh:
        return {(r["well"], int(r["site"]), int(r["timepoint"])): int(r["nuclei_count"])
                for r in csv.DictReader(fh)}


def _check_counts(plate, results) -> float:
    """Fraction of sites whose count is within 5% of the truth; checks coverage too."""
    truth = _ground_truth(plate.folder)
    images = results.images
    assert (images["error"] == "").all(), images.loc[images["error"] != "", "error"].tolist()
    keys = list(zip(images["well"], images["site"], images["timepoint"]))
    assert sorted(keys) == sorted(truth), "results do not cover exactly the sites of ground_truth.csv"
    cfg = plate.config
    assert len(truth) == cfg.wells * cfg.sites * cfg.timepoints
    within = [abs(int(n) - truth[k]) <= 0.05 * truth[k] for k, n in zip(keys, images["nuclei_count"])]
    return sum(within) / len(within)


@pytest.fixture(scope="module")
def normal_counts(normal_plate):
    return _run(normal_plate, "nuclei_count")


def test_nuclei_count_accuracy_normal_plate(normal_plate, normal_counts):
    assert len(normal_counts.images) == 12 * 2
    assert _check_counts(normal_plate, normal_counts) >= 0.95


def test_touching_plate_really_has_touching_nuclei(touching_plate):
    """Counting connected foreground would be far off on this plate: the test below is meaningful."""
    cfg = touching_plate.config
    nuclei = components = 0
    for unit in synthetic.layout_for(cfg).units():
        labels = synthetic.site_labels(cfg, unit.well, unit.site, unit.timepoint)
        nuclei += len(np.unique(labels[labels > 0]))
        components += int(label(labels > 0).max())
    assert nuclei == sum(_ground_truth(touching_plate.folder).values())
    assert components <= 0.8 * nuclei, (components, nuclei)


def test_nuclei_count_accuracy_touching_plate(touching_plate):
    results = _run(touching_plate, "nuclei_count")
    assert len(results.images) == 16 * 2
    assert _check_counts(touching_plate, results) >= 0.95


def test_nuclei_count_accuracy_z_and_time(zt_plate):
    results = _run(zt_plate, "nuclei_count")
    images = results.images
    assert len(images) == 4 * 2 * 3
    assert sorted(images["timepoint"].unique()) == [1, 2, 3]
    assert _check_counts(zt_plate, results) >= 0.95
    # Nuclei multiply over time in the generator; the counts follow.
    per_t = images.groupby("timepoint")["nuclei_count"].sum()
    assert per_t[1] < per_t[3]
    wells = results.wells
    assert len(wells) == 4 * 3 and set(wells["timepoint"]) == {1, 2, 3}


def test_nuclear_translocation_ranks_wells_by_generated_ratio(normal_plate):
    results = _run(normal_plate, "nuclear_translocation")
    assert (results.images["error"] == "").all()
    wells = results.wells.set_index("well")
    cfg = normal_plate.config
    truth = pd.Series({w: synthetic._well_params(cfg, *parse_well(w))[1] for w in wells.index})
    measured = wells["nc_ratio_ch2"].astype(float)
    assert measured.notna().all()
    assert len(measured) == 12
    # The generated ratios spread enough for a ranking to mean something.
    assert truth.max() - truth.min() > 0.5
    rho = measured.corr(truth, method="spearman")
    assert rho > 0.9, (rho, pd.DataFrame({"measured": measured, "truth": truth}))
