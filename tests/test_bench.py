"""The benchmark's plumbing on tiny plates: it runs, every runner measures the same
thing, the op table compares every op with its reference, and the JSON and the
tables have every column. Timings are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from openhcs_omero_lib.plates.pixels import READ_LANES

ROOT = Path(__file__).resolve().parents[1]

ROW_COLUMNS = {"wells", "latency_ms", "ours_1w_s", "ours_2w_s", "naive_s", "openhcs_2w_s", "limit_2w_s",
               "parallel_compute_2w_s", "speedup_vs_naive", "speedup_vs_openhcs", "fraction_of_limit",
               "fraction_of_parallel_compute", "fraction_of_limit_1w"}
TABLE_HEADERS = ["ours 1 worker (s)", "ours 2 workers (s)", "naive script (s)", "OpenHCS 2 workers (s)",
                 "compute-bound limit 2 workers (s)", "measured parallel compute 2 processes (s)",
                 "speed-up over naive", "speed-up over OpenHCS", "fraction of limit",
                 "layout round-trips ours", "pixel round-trips ours", "layout round-trips naive",
                 "pixel round-trips naive", "parent peak MB ours", "worker peak MB ours", "peak MB naive",
                 "parent / worker peak MB OpenHCS"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from openhcs_omero_lib.bench import main

    tmp = tmp_path_factory.mktemp("bench")
    out, table = tmp / "bench.json", tmp / "bench.md"
    status = main(["--quick", "--latencies", "1", "--skip-openhcs", "--out", str(out),
                   "--markdown", str(table), "--cache", str(tmp / "plates")])
    return status, json.loads(out.read_text()), table.read_text()


def test_quick_run_succeeds_and_every_runner_did_the_same_work(quick):
    status, report, _ = quick
    assert status == 0
    assert report["meta"]["sizes"] == [2, 4]
    for wells, check in report["consistent_results"].items():
        assert check["agree"], (wells, check)
        [(units, total)] = check["units_and_count_totals"]
        assert units == report["meta"]["units"][wells] and total > 0


def test_every_row_has_every_column(quick):
    _, report, _ = quick
    rows = report["rows"]
    assert [(r["wells"], r["latency_ms"]) for r in rows] == [(2, 1.0), (4, 1.0)]
    for row in rows:
        assert set(row) == ROW_COLUMNS
        for key in ROW_COLUMNS - {"openhcs_2w_s", "speedup_vs_openhcs"}:
            assert row[key] is not None and row[key] >= 0, key
        # OpenHCS was skipped: its columns are there, empty, and the report says why
        assert row["openhcs_2w_s"] is None and row["speedup_vs_openhcs"] is None
    assert report["openhcs"] == "skipped: --skip-openhcs"


def test_round_trips_are_counted_per_service(quick):
    _, report, _ = quick
    channels = 2
    for trips in report["round_trips"]:
        units = trips["units"]
        # the layout costs the same whatever the plate's size
        assert trips["ours_layout"] == report["round_trips"][0]["ours_layout"] > 0
        # one image switch per unit, one plane per channel, a store opened and closed
        # per reading lane
        assert trips["ours_pixels"] == units * (1 + channels) + 2 * READ_LANES
        # the naive script: a pixels load per image, a fresh store per plane
        assert trips["naive_layout"] == 2 + units
        assert trips["naive_pixels"] == units * channels * 4
        assert trips["naive_calls"]["upload"]["IUpdate.saveObject"] == 1


def test_memory_is_reported_for_parent_and_workers(quick):
    _, report, _ = quick
    for mem in report["memory"]:
        assert mem["ours_parent_peak_mb"] > 0 and mem["ours_1w_peak_mb"] > 0 and mem["naive_peak_mb"] > 0
        # On plates this small the script's own process computes everything before a
        # worker has started (see test_worker_processes_are_sampled); the column is
        # there all the same.
        assert "ours_worker_peak_mb" in mem
        assert mem["openhcs_parent_peak_mb"] is None
    for plate in report["plates"]:
        worker_runs = [r for key, r in plate["runs"].items() if key.startswith("openhcs-omero/2w")]
        assert worker_runs and all(r["parent_peak_mb"] > 0 for r in worker_runs)


def _hold_memory(megabytes: int, seconds: float) -> None:
    import time

    block = bytearray(megabytes * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page so that it is resident
    time.sleep(seconds)


def test_worker_processes_are_sampled():
    import multiprocessing

    from openhcs_omero_lib.bench.memory import PeakMemory

    with PeakMemory() as peaks:
        worker = multiprocessing.get_context("spawn").Process(target=_hold_memory, args=(64, 1.5))
        worker.start()
        worker.join()
    report = peaks.report()
    assert worker.exitcode == 0
    [peak] = report["worker_peak_mb"]
    assert peak >= 64
    assert report["parent_peak_mb"] > 0


def test_targets_are_listed_with_a_verdict(quick):
    _, report, _ = quick
    names = [t["target"] for t in report["targets"]]
    assert len(names) == 6
    assert any("compute-bound limit" in n for n in names)
    assert any("1 ms/call" in n for n in names) and any("5 ms/call" in n for n in names)
    assert any("OpenHCS" in n for n in names)
    by_name = {t["target"]: t for t in report["targets"]}
    assert by_name["layout round-trips the same for 2 and 4 wells"]["met"] is True
    assert by_name["faster than OpenHCS on the same plate and pipeline"]["met"] is None  # not measured
    assert by_name["speed-up over the naive script at 5 ms/call"]["met"] is None  # no 5 ms run here
    for target in report["targets"]:
        assert target["met"] in (True, False, None)


def test_table_has_every_column_and_the_machine(quick):
    _, report, table = quick
    for header in TABLE_HEADERS:
        assert header in table, header
    assert report["meta"]["machine"]["cpu"] in table
    assert report["meta"]["date"] in table
    assert "| 4 | 1 |" in table  # a row per plate size and latency


def test_the_op_table_has_every_op_of_both_presets_with_the_same_outputs(quick):
    _, report, table = quick
    ops = report["ops"]
    assert ops["sizes"] == [256] and len(ops["fields"]) == 1
    names = [r["op"] for r in ops["rows"]]
    for op in ("load", "subtract_background", "gaussian", "threshold", "fill_holes", "remove_small_objects",
               "watershed_split", "ring", "measure_objects", "whole nuclei_count unit",
               "whole nuclear_translocation unit"):
        assert any(name.startswith(op) for name in names), op
    for row in ops["rows"]:
        # the library and the reference agree on every output (the blur within rounding)
        assert row["same_output"], row["op"]
        assert row["ours_ms"] >= 0 and row["reference_ms"] > 0 and row["ratio"] is not None
        assert row["reference"]
    assert "256 px library (ms)" in table and "reference formulation" in table


def test_the_plain_loop_comparison_counts_the_same_nuclei(quick):
    _, report, table = quick
    local = report["local"]
    assert local["same_counts"] and local["fields"] == 4 * 2 and local["nuclei"] > 0
    assert [(r["runner"], r["workers"]) for r in local["rows"]] == [
        ("openhcs-omero run", 1), ("plain loop", 1), ("openhcs-omero run", 2), ("plain loop", 2)]
    for row in local["rows"]:
        assert row["seconds"] > 0 and row["ratio_to_plain"] > 0
    assert "plain loop, Pool(2)" in table
    assert "1 worker(s) within 1.1x of the sequential plain loop" in table


def test_parts_can_be_run_alone(tmp_path):
    from openhcs_omero_lib.bench import main

    out = tmp_path / "ops.json"
    assert main(["--quick", "--ops", "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    report = json.loads(out.read_text())
    assert report["meta"]["parts"] == ["ops"]
    assert "ops" in report and "local" not in report and "rows" not in report


def test_bench_runs_from_the_repository_root():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for option in ("--quick", "--sizes", "--repeats", "--out", "--skip-openhcs", "--latencies", "--ops",
                   "--plain-loop", "--omero", "--op-sizes", "--local-plate"):
        assert option in out.stdout


def test_bad_options_are_refused():
    out = subprocess.run([sys.executable, "-m", "bench", "--sizes", "0,96"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2
    assert "at least 1" in out.stderr
    out = subprocess.run([sys.executable, "-m", "bench", "--local-plate", "96x9x32"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 2
    assert "64 pixels" in out.stderr


def test_openhcs_is_skipped_with_a_reason_when_it_cannot_be_imported(tmp_path):
    from openhcs_omero_lib.bench.openhcs_runner import find_python

    python, note = find_python(sys.executable if _has_openhcs() else str(tmp_path / "no-python"))
    if _has_openhcs():
        pytest.skip("openhcs is importable here")
    assert python is None
    assert note.startswith("skipped:") and "openhcs" in note


def _has_openhcs() -> bool:
    import importlib.util

    return importlib.util.find_spec("openhcs") is not None
