"""The direct-reads benchmark's plumbing on tiny plates (``python -m bench --direct``):
both runners measure the same sites, the direct one reads its planes from the files
and says so, and round-trips and bytes over Ice are counted. Timings are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from openhcs_omero_lib.plates.pixels import READ_LANES

ROOT = Path(__file__).resolve().parents[1]
HEADERS = ["RawPixelsStore (s)", "direct (s)", "compute-bound limit 2 workers (s)",
           "measured parallel compute 2 processes (s)", "fraction of limit, RawPixelsStore",
           "fraction of limit, direct", "direct speed-up", "pixel round-trips RawPixelsStore / direct",
           "pixel MB received RawPixelsStore / direct", "reading every plane alone, RawPixelsStore / direct (s)",
    "CPU s script and workers + server, RawPixelsStore / direct"]


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    from openhcs_omero_lib.bench import main

    tmp = tmp_path_factory.mktemp("bench-direct")
    out, table = tmp / "direct.json", tmp / "direct.md"
    status = main(["--direct", "--quick", "--latencies", "1", "--out", str(out), "--markdown", str(table),
                   "--cache", str(tmp / "plates")])
    return status, json.loads(out.read_text()), table.read_text()


def test_both_runners_measure_the_same_sites(direct):
    status, report, _ = direct
    assert status == 0
    assert [(r["plate"], r["latency_ms"]) for r in report["rows"]] == [("2 wells", 1.0), ("4 wells", 1.0)]
    for plate, check in report["consistent_results"].items():
        [(units, total)] = check["units_and_count_totals"]
        assert check["agree"] and total > 0, plate


def test_the_direct_runner_reads_files_and_only_the_checked_planes_over_ice(direct):
    _, report, _ = direct
    plane = 64 * 64 * 2
    for row in report["rows"]:
        units, channels = row["units"], row["channels"]
        # a store opened and closed for the check, an image switch and a plane per channel
        assert row["direct_pixel_round_trips"] == 2 + 2 * channels
        assert row["server_pixel_round_trips"] == units * (1 + channels) + 2 * READ_LANES
        # the replies: the checked planes only, against every plane (with Ice's few bytes each)
        assert channels * plane <= row["direct_pixel_bytes"] < channels * (plane + 64)
        assert units * channels * plane <= row["server_pixel_bytes"] < units * channels * (plane + 64)
    for runs in report["raw"].values():
        assert all(r["pixel_access"]["path"] == "direct" for r in runs["direct/2w@1ms"])
        assert all(r["pixel_access"]["path"] == "server" for r in runs["openhcs-omero/2w@1ms"])
    for row in report["rows"]:  # each way, every plane read alone
        assert row["planes"] == row["units"] * row["channels"]
        assert row["read_server_s"] > 0 and row["read_direct_s"] > 0
        assert row["server_cpu_s"] > 0 and row["direct_cpu_s"] > 0 and row["server_server_cpu_s"] >= 0
    for runs in report["raw_reads"].values():
        assert [r["pixel_access"]["path"] for r in runs["read/direct/1w@1ms"]] == ["direct"]
        assert [r["pixel_access"]["path"] for r in runs["read/server/1w@1ms"]] == ["server"]


def test_the_table_has_every_column_and_the_targets(direct):
    _, report, table = direct
    for header in HEADERS:
        assert header in table, header
    assert "| 4 wells, 64 px, 2 ch | 1 |" in table
    targets = {t["target"]: t for t in report["targets"]}
    assert len(targets) == 2
    realistic = next(t for name, t in targets.items() if "realistic plate" in name)
    assert realistic["met"] is None and "not measured" in table  # --quick has no realistic plate


def test_a_bad_realistic_plate_is_refused():
    out = subprocess.run([sys.executable, "-m", "bench", "--direct", "--realistic", "24,2,5,1024"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "1-4 channels" in out.stderr
