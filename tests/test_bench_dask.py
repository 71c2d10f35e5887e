"""The Dask comparison's plumbing on a tiny plate: it runs every configuration, they
agree on the counts, and the JSON and the tables have every figure. Timings are never
asserted."""

from __future__ import annotations

import json


def test_quick_comparison_runs_every_configuration(tmp_path, monkeypatch, capsys):
    from openhcs_omero_lib.bench.dask_compare import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the plate is written there
    out = tmp_path / "dask.json"
    assert main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    [row] = report["rows"]
    assert row["units"] == 8 and row["compute_s"] > 0
    for kind in ("processes", "dask"):
        for n in (1, 2):
            assert row[f"{kind}_{n}w_s"] > 0
            assert f"{kind}_{n}w_overhead_ms" in row and row[f"{kind}_{n}w_fraction"] > 0
    assert report["scheduler_ms_per_task"] > 0 and report["omero_planes_per_second"] > 0
    assert set(report["dask_start_s"]) == {"1", "2"}
    table = capsys.readouterr().out
    assert "| fraction of limit, processes 2 | fraction of limit, Dask 2 |" in table
    assert "workers where the scheduler saturates" in table
    assert table.count("| 4 wells x 2 sites x 2 channels, 64x64 px |") == 2
