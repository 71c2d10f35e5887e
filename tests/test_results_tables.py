"""The wells table: per well, timepoint and run, what its measured sites add up to."""

from __future__ import annotations

import math

import pandas as pd

from openhcs_omero_lib.plates.layout import Channel, PlateLayout, Well
from openhcs_omero_lib.results.tables import wells_table

LAYOUT = PlateLayout(name="P", rows=2, columns=2, wells=(Well(1, 1, id=11), Well(1, 2, id=12), Well(2, 1, id=21)),
                     sites=3, channels=(Channel(1, "DAPI"),), timepoints=2)


def _images(rows: list[tuple], runs: bool = False) -> pd.DataFrame:
    """(well, site, timepoint, [run_id,] count, area, error) rows as images_table makes them."""
    names = ["well", "site", "timepoint", *(["run_id"] if runs else []), "nuclei_count", "nuclei_area_mean", "error"]
    frame = pd.DataFrame(rows, columns=names)
    frame.insert(1, "row", frame["well"].str[0])
    frame.insert(2, "column", frame["well"].str[1:].astype(int))
    frame["nuclei_count"] = frame["nuclei_count"].astype("Int64")
    if runs:
        frame.insert(frame.columns.get_loc("run_id") + 1, "run", [f"run {r}" for r in frame["run_id"]])
        frame["run_id"] = frame["run_id"].astype("Int64")
    return frame


def test_sites_that_failed_are_counted_apart_and_left_out_of_sums_and_means():
    nan = math.nan
    images = _images([
        ("B01", 1, 1, 4, 50.0, ""),            # first in the images: first in the table
        ("A01", 1, 1, 10, 100.0, ""),
        ("A01", 2, 1, 20, nan, ""),            # measured, no area: left out of the mean only
        ("A01", 3, 1, None, nan, "OSError: unreadable"),
        ("A02", 1, 1, None, nan, "OSError: unreadable"),
        ("A02", 2, 1, None, nan, "OSError: unreadable"),
        ("A01", 1, 2, 7, 30.0, ""),
        ("A01", 2, 2, 8, 60.0, ""),
    ])
    wells = wells_table(LAYOUT, images)
    assert list(wells.columns) == ["well", "row", "column", "timepoint", "well_id", "sites", "sites_failed",
                                   "nuclei_count", "nuclei_area_mean"]
    assert list(zip(wells["well"], wells["timepoint"])) == [("B01", 1), ("A01", 1), ("A02", 1), ("A01", 2)]
    assert wells["well_id"].tolist() == [21, 11, 12, 11]
    assert wells["sites"].tolist() == [1, 2, 0, 2]
    assert wells["sites_failed"].tolist() == [0, 1, 2, 0]
    assert str(wells["nuclei_count"].dtype) == "Int64"
    assert wells["nuclei_count"].tolist()[:2] == [4, 30] and wells["nuclei_count"].iloc[3] == 15
    assert wells["nuclei_count"].isna().tolist() == [False, False, True, False]  # no site measured: no count
    assert wells["nuclei_area_mean"].iloc[:2].tolist() == [50.0, 100.0]
    assert math.isnan(wells["nuclei_area_mean"].iloc[2]) and wells["nuclei_area_mean"].iloc[3] == 45.0


def test_each_run_of_a_well_is_a_row_of_its_own():
    images = _images([
        ("A01", 1, 1, 1, 3, 10.0, ""),
        ("A01", 2, 1, 1, 5, 20.0, ""),
        ("A01", 1, 1, 2, 6, 40.0, ""),
        ("A01", 2, 1, 2, None, math.nan, "ValueError: no plane"),
    ], runs=True)
    wells = wells_table(LAYOUT, images)
    assert list(wells.columns[:7]) == ["well", "row", "column", "timepoint", "run_id", "run", "well_id"]
    assert wells["run_id"].tolist() == [1, 2] and wells["run"].tolist() == ["run 1", "run 2"]
    assert str(wells["run_id"].dtype) == "Int64"
    assert wells["nuclei_count"].tolist() == [8, 6] and wells["sites_failed"].tolist() == [0, 1]
    assert wells["nuclei_area_mean"].tolist() == [15.0, 40.0]


def test_a_mean_is_pandas_own_to_the_last_digit():
    """Means are summed as Series.mean sums them: the table of a plate does not change
    in its last digits from one version to the next."""
    values = [0.1 * k + 1e-9 * k * k for k in range(1, 10)]  # nine sites: numpy's pairwise sum
    images = _images([("A01", s, 1, 1, v, "") for s, v in enumerate(values, start=1)])
    assert wells_table(LAYOUT, images)["nuclei_area_mean"].iloc[0] == pd.Series(values).mean()
