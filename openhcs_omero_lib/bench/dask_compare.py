"""Dask against the worker processes, on the same plates and pipeline.

    python -m openhcs_omero_lib.bench.dask_compare [--plates 96x160,384x160,96x512] [--repeats 3]

For each plate (the benchmark's cached ImageXpress folders) it times the same units run
four ways: worker processes with 1 and 2 workers (:class:`~..execution.backend.ProcessPool`:
the second process is started for each run, as a script starts it) and a local Dask
cluster of 1 and 2 single-threaded worker processes (started once, its start-up shown
apart, as a script or a server starts it once; a run's time includes sending the source,
opening it on each worker and closing it). Beside them: the compute-bound limit (every
unit computed single-threaded on pixels in memory, summed, divided by the workers), the
per-unit overhead ``(time x workers - compute) / units`` and the fraction of the limit.
Then, for the projection of where adding workers stops paying: the scheduler's cost per
task (a burst of empty tasks on the 2-worker cluster) and the planes per second that
OMERO (the stand-in, over loopback) serves one reader.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from openhcs_omero_lib.bench.plates import PlateSpec, plate_folder

CONFIGS = [("processes", 1), ("processes", 2), ("dask", 1), ("dask", 2)]
EMPTY_TASKS = 2000


def _plates(text: str) -> list[PlateSpec]:
    plates = []
    for item in text.split(","):
        wells, _, size = item.strip().partition("x")
        plates.append(PlateSpec(wells=int(wells), size=int(size or 160)))
    return plates


def _noop(x: int) -> int:
    return x


def _compute_seconds(folder: Path, pipeline: str) -> dict[str, Any]:
    from openhcs_omero_lib.bench.runs import compute_only

    return compute_only({"folder": str(folder), "pipeline": pipeline})


def _scheduler_cost(backend) -> float:
    """Seconds of scheduler and round trip per task: a burst of empty tasks."""
    client = backend.client
    client.gather(client.map(_noop, range(100), pure=False))  # warm
    start = time.perf_counter()
    client.gather(client.map(_noop, range(EMPTY_TASKS), pure=False))
    return (time.perf_counter() - start) / EMPTY_TASKS


def _omero_planes_per_second(folder: Path) -> float:
    """One reader's planes per second from the stand-in (its Ice servants in this
    process, over loopback): what one worker's source can be served."""
    from omero.gateway import BlitzGateway

    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.omero.plate import load_plate
    from openhcs_omero_lib.testing import OmeroStandIn

    with OmeroStandIn() as server:
        plate_id = server.import_plate(folder)
        conn: BlitzGateway = server.gateway()
        try:
            plate = load_plate(conn, plate_id)
            layout = plate.layout
            planes = [(u, c.index) for u in layout.units() for c in layout.channels][:400]
            with OmeroPixelSource(conn, plate) as source:
                source.read_plane(planes[0][0].well, planes[0][0].site, planes[0][1])
                start = time.perf_counter()
                for unit, channel in planes:
                    source.read_plane(unit.well, unit.site, channel)
                return len(planes) / (time.perf_counter() - start)
        finally:
            conn.close()


def _time_run(backend, spec, folder: Path) -> tuple[float, float]:
    from openhcs_omero_lib.engine import bind
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    with ImageXpressSource(folder) as source:
        bound = bind(spec, source.layout)
        start = time.perf_counter()
        results = backend.run_units(bound, source)
        seconds = time.perf_counter() - start
    assert all(r.error is None for r in results), [r.error for r in results if r.error][:3]
    return seconds, sum(r.measurements.get("nuclei_count", 0) for r in results)


def run_comparison(plates: list[PlateSpec], repeats: int, pipeline: str = "nuclei_count") -> dict[str, Any]:
    from openhcs_omero_lib.execution.backend import ProcessPool
    from openhcs_omero_lib.execution.dask_backend import DaskBackend
    from openhcs_omero_lib.execution.settings import DaskSettings
    from openhcs_omero_lib.pipeline.loading import resolve_pipeline

    spec = resolve_pipeline(pipeline)[0]
    backends: dict[tuple[str, int], Any] = {("processes", n): ProcessPool(n) for n in (1, 2)}
    started: dict[int, float] = {}
    for n in (1, 2):
        t = time.perf_counter()
        backends[("dask", n)] = DaskBackend.open(DaskSettings(scheduler=f"local:{n}"))
        started[n] = time.perf_counter() - t
    rows = []
    try:
        cost = _scheduler_cost(backends[("dask", 2)])
        for plate in plates:
            folder = plate_folder(plate)
            times: dict[tuple[str, int], list[float]] = {c: [] for c in CONFIGS}
            computes, totals = [], set()
            for _ in range(repeats):  # interleaved: a change in the machine's load hits all alike
                computes.append(_compute_seconds(folder, pipeline)["seconds"])
                for config in CONFIGS:
                    seconds, total = _time_run(backends[config], spec, folder)
                    times[config].append(seconds)
                    totals.add(total)
            assert len(totals) == 1, f"the runs disagree on the nuclei count: {totals}"
            compute = {"seconds": statistics.median(computes)}
            row: dict[str, Any] = {"plate": plate.describe(), "wells": plate.wells, "size": plate.size,
                                   "units": plate.units, "compute_s": round(compute["seconds"], 3),
                                   "compute_ms_per_unit": round(1000 * compute["seconds"] / plate.units, 2)}
            for (kind, n), values in times.items():
                median = statistics.median(values)
                limit = compute["seconds"] / n
                row[f"{kind}_{n}w_s"] = round(median, 3)
                row[f"{kind}_{n}w_overhead_ms"] = round(1000 * (median * n - compute["seconds"]) / plate.units, 2)
                row[f"{kind}_{n}w_fraction"] = round(limit / median, 2)
            rows.append(row)
        planes_per_second = _omero_planes_per_second(plate_folder(plates[0]))
    finally:
        for backend in backends.values():
            backend.close()
    return {"machine": {"python": platform.python_version(), "cores": os.cpu_count(),
                        "load": list(os.getloadavg())},
            "repeats": repeats, "pipeline": pipeline, "dask_start_s": {str(n): round(s, 2) for n, s in started.items()},
            "scheduler_ms_per_task": round(1000 * cost, 3), "omero_planes_per_second": round(planes_per_second, 1),
            "rows": rows}


def projection(report: dict[str, Any], chunk: int = 16, channels: int = 2) -> list[str]:
    """Where N workers stop scaling, from the measured per-unit costs: the scheduler
    handles one task per ``s`` seconds and a worker asks for one every ``chunk x c``
    seconds, so it saturates near ``N = chunk x c / s``; OMERO serves ``R`` planes a
    second to one reader and a unit needs ``channels`` planes every ``c`` seconds, so
    one server saturates near ``N = R x c / channels`` (readers on separate stores
    add up until the server's own cores or disks are the limit)."""
    s = report["scheduler_ms_per_task"] / 1000
    r = report["omero_planes_per_second"]
    lines = []
    for row in report["rows"]:
        c = row["compute_ms_per_unit"] / 1000
        lines.append(f"| {row['plate']} | {1000 * c:.1f} | {chunk * c / s:,.0f} | {r * c / channels:,.1f} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    out = ["| plate | units | compute-bound limit 1 / 2 workers (s) | processes 1 worker (s) | processes 2 workers (s) "
           "| Dask 1 worker (s) | Dask 2 workers (s) | per-unit overhead, processes 1 / 2 (ms) "
           "| per-unit overhead, Dask 1 / 2 (ms) | fraction of limit, processes 2 | fraction of limit, Dask 2 |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        out.append(f"| {r['plate']} | {r['units']} | {r['compute_s']:.2f} / {r['compute_s'] / 2:.2f} "
                   f"| {r['processes_1w_s']:.2f} | {r['processes_2w_s']:.2f} | {r['dask_1w_s']:.2f} "
                   f"| {r['dask_2w_s']:.2f} "
                   f"| {r['processes_1w_overhead_ms']:.1f} / {r['processes_2w_overhead_ms']:.1f} "
                   f"| {r['dask_1w_overhead_ms']:.1f} / {r['dask_2w_overhead_ms']:.1f} "
                   f"| {r['processes_2w_fraction']:.2f} | {r['dask_2w_fraction']:.2f} |")
    out += ["", f"Local Dask cluster start: {report['dask_start_s']['1']} s (1 worker), "
                f"{report['dask_start_s']['2']} s (2 workers); scheduler cost {report['scheduler_ms_per_task']} ms "
                f"per task; the stand-in serves one reader {report['omero_planes_per_second']:,.0f} planes/s.",
            "", "| plate | compute per unit (ms) | workers where the scheduler saturates (16 units a task) "
                "| workers one OMERO reader's rate feeds |", "|---|---:|---:|---:|"]
    return "\n".join(out + projection(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openhcs_omero_lib.bench.dask_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plates", default="96x160,384x160,96x512",
                        help="WELLSxPIXELS,... (2 sites, 2 channels each; default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one 4-well plate, one run: checks that it runs")
    parser.add_argument("--out", default="results/dask-bench.json")
    args = parser.parse_args(argv)
    plates = [PlateSpec(wells=4, size=64)] if args.quick else _plates(args.plates)
    report = run_comparison(plates, 1 if args.quick else args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
