"""``python -m bench --direct``: reading pixels through RawPixelsStore against reading the
plate's files in the managed repository (``Pixel_Access`` server and auto).

On each plate (the default plates, and one of realistic planes: ``--realistic``), and
at each latency, both runners do what Run_HCS_Pipeline does with the same workers; the
compute-bound limit is measured as by the main benchmark. Besides times, each run
reports its pixel round-trips and the bytes it received over Ice (the stand-in counts
them with Ice's own metrics), and which way it read (a direct run that fell back to
RawPixelsStore stops the benchmark: its figures would be the other runner's).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openhcs_omero_lib.bench import report as R
from openhcs_omero_lib.bench.plates import DEFAULT_REALISTIC, PlateSpec, plate_folder, realistic_spec

DIRECT = "direct"
READ = "read"
"""Every plane read alone, nothing computed: ``read/server`` and ``read/direct``"""


def _jobs(plates: list[str], latencies: list[float], top: int) -> list[tuple[str, str, int, float | None]]:
    jobs: list[tuple[str, str, int, float | None]] = []
    for plate in plates:
        jobs.append((plate, R.COMPUTE, 1, None))
        if top > 1:
            jobs.append((plate, R.COMPUTE, top, None))
        for latency in latencies:
            jobs += [(plate, R.OURS, top, latency), (plate, DIRECT, top, latency),
                     (plate, f"{READ}/server", 1, latency), (plate, f"{READ}/direct", 1, latency)]
    return jobs


def run_direct_benchmark(settings: dict[str, Any], *, cache: Path | None, log=print) -> dict[str, Any]:
    from openhcs_omero_lib.bench import command as C
    from openhcs_omero_lib.bench.standin import StandInProcess

    top = max(settings["workers"])
    specs = {f"{w} wells": PlateSpec(w, settings["sites"], settings["channels"], settings["plane"])
             for w in settings["sizes"]}
    if settings.get("realistic") is not None:
        specs["realistic"] = settings["realistic"]
    folders = {}
    for label, spec in specs.items():
        started = time.perf_counter()
        folders[label] = plate_folder(spec, cache)
        log(f"plate {spec.describe()}: {folders[label]} ({time.perf_counter() - started:.1f} s)")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {label: {} for label in specs}
    reads: dict[str, dict[str, list[dict[str, Any]]]] = {label: {} for label in specs}
    load_before = C._load()
    with tempfile.TemporaryDirectory(prefix="openhcs-omero-bench-") as tmp:
        env = C._environment(Path(tmp))
        with StandInProcess(env) as server:
            ids = {label: server.import_plate(str(folders[label])) for label in specs}
            jobs = _jobs(list(specs), settings["latencies_ms"], top)

            def repeats(label: str) -> int:
                big = label == "realistic" or specs[label].wells > C.LARGE_PLATE
                return settings["large_repeats"] if big else settings["repeats"]

            total = sum(repeats(label) for label, *_ in jobs)
            done = 0
            for repeat in range(max(settings["repeats"], settings["large_repeats"])):
                for label, runner, workers, latency in jobs:
                    if repeat >= repeats(label):
                        continue
                    done += 1
                    result = _run_job(runner, workers, latency, folder=folders[label], plate_id=ids[label],
                                      server=server, pipeline=settings["pipeline"], env=env)
                    key = R.run_key(runner, workers, latency)
                    (reads if runner.startswith(READ) else raw)[label].setdefault(key, []).append(result)
                    log(f"[{done}/{total}] {label}, {key}: {result['seconds']:.2f} s")
    report = build(raw, reads, specs, settings["latencies_ms"], top)
    report["meta"] = {"date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
                      "machine": {**C._machine(), "load_before": load_before, "load_after": C._load()},
                      "pipeline": settings["pipeline"], "workers": top, "latencies_ms": settings["latencies_ms"],
                      "repeats": {"plates": settings["repeats"],
                                  f"plates over {C.LARGE_PLATE} wells and the realistic plate":
                                  settings["large_repeats"]},
                      "plates": {label: spec.describe() for label, spec in specs.items()}}
    report["consistent_results"] = C._consistent(raw)
    report["raw"] = raw
    report["raw_reads"] = reads
    return report


def _run_job(runner: str, workers: int, latency: float | None, *, folder: Path, plate_id: int, server,
             pipeline: str, env: dict[str, str]) -> dict[str, Any]:
    from openhcs_omero_lib.bench import command as C

    if runner == R.COMPUTE and workers == 1:
        return C._run_process({"runner": "compute", "folder": str(folder), "pipeline": pipeline}, env)
    if runner == R.COMPUTE:
        return C._compute_parallel(folder, pipeline, workers, env)
    server.set_latency((latency or 0) / 1000)
    if runner.startswith(READ):
        access = "auto" if runner.endswith("direct") else "server"
        result = C._run_process({"runner": "read", "server": server.connection, "plate_id": plate_id,
                                 "pipeline": pipeline, "pixel_access": access}, env)
        if result["pixel_access"]["path"] != ("direct" if access == "auto" else "server"):
            raise RuntimeError(f"the direct reader read through RawPixelsStore: {result['pixel_access']['reason']}")
        return result
    access = "auto" if runner == DIRECT else "server"
    result = C._run_process({"runner": "ours", "server": server.connection, "plate_id": plate_id,
                             "workers": workers, "pipeline": pipeline, "pixel_access": access, "wire": True}, env)
    read = result["pixel_access"]
    if runner == DIRECT and read["path"] != "direct":
        raise RuntimeError(f"the direct runner read through RawPixelsStore: {read['reason']}")
    return result


def build(raw: dict[str, dict[str, list[dict[str, Any]]]], reads: dict[str, dict[str, list[dict[str, Any]]]],
          specs: dict[str, PlateSpec], latencies: list[float], top: int) -> dict[str, Any]:
    """``raw[plate][run_key]`` -> one row per plate and latency."""
    rows = []
    for label, spec in specs.items():
        runs = raw[label]
        compute = R.summarise_runs(runs[R.run_key(R.COMPUTE, 1, None)])
        parallel = runs.get(R.run_key(R.COMPUTE, top, None))
        limit = round(compute["seconds"] / top, 3)
        for latency in latencies:
            row: dict[str, Any] = {"plate": label, "wells": spec.wells, "plane": spec.size,
                                   "channels": spec.channels, "units": compute["units"], "latency_ms": latency,
                                   f"limit_{top}w_s": limit,
                                   f"parallel_compute_{top}w_s": R.summarise_runs(parallel)["seconds"]
                                   if parallel and top > 1 else None}
            for name, runner in (("server", R.OURS), ("direct", DIRECT)):
                results = runs[R.run_key(runner, top, latency)]
                summary = R.summarise_runs(results)
                row[f"{name}_s"] = summary["seconds"]
                row[f"{name}_fraction_of_limit"] = R._ratio(limit, summary["seconds"])
                row[f"{name}_pixel_round_trips"] = summary["pixel_round_trips"]
                row[f"{name}_pixel_bytes"] = results[0]["bytes_received"]["pixels"]
                row[f"{name}_bytes"] = results[0]["bytes_received"]["all"]
                # work done, whatever else shares the machine: the script and its workers, and the server
                row[f"{name}_cpu_s"] = round(statistics.median(r["cpu_seconds"] for r in results), 3)
                row[f"{name}_server_cpu_s"] = summary.get("server_cpu_seconds")
            row["direct_speedup"] = R._ratio(row["server_s"], row["direct_s"])
            for name in ("server", "direct"):
                found = reads[label].get(R.run_key(f"{READ}/{name}", 1, latency))
                row[f"read_{name}_s"] = round(statistics.median(r["seconds"] for r in found), 3) if found else None
                row["planes"] = found[0]["planes"] if found else None
            row["read_speedup"] = R._ratio(row["read_server_s"], row["read_direct_s"])
            rows.append(row)
    return {"rows": rows, "targets": _targets(rows, top)}


def _targets(rows: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    realistic = [r for r in rows if r["plate"] == "realistic"]
    fractions = {r["latency_ms"]: r["direct_fraction_of_limit"] for r in realistic}
    slower = [r for r in rows if r["direct_s"] > r["server_s"]]
    return [
        {"target": f"direct reads, fraction of the compute-bound limit on the realistic plate, {top} workers",
         "wanted": ">= 0.90", "by_latency": fractions,
         "met": all(v >= R.TARGETS["fraction_of_limit"] for v in fractions.values()) if fractions else None},
        {"target": "direct reads never slower than RawPixelsStore reads", "wanted": "on every plate and latency",
         "slower": [(r["plate"], r["latency_ms"], r["direct_s"], r["server_s"]) for r in slower],
         "met": not slower},
    ]


def _mb(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.0f}" if value >= 10e6 else f"{value / 1e6:.2f}"


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    top = meta["workers"]
    plates = "; ".join(f"{label}: {text}" for label, text in meta["plates"].items())
    lines = [f"Direct reads against RawPixelsStore, {meta['date']} on {meta['machine']['cpu']} "
             f"({meta['machine']['cores']} cores), load average before/after {meta['machine']['load_before']}/"
             f"{meta['machine']['load_after']}; pipeline `{meta['pipeline']}`, {top} workers; plates: {plates}; "
             f"times are medians of {R._repeats(meta['repeats'])}.", ""]
    lines += [f"| plate | ms/call | RawPixelsStore (s) | direct (s) | compute-bound limit {top} workers (s) | "
              f"measured parallel compute {top} processes (s) | "
              "fraction of limit, RawPixelsStore | fraction of limit, direct | direct speed-up | "
              "pixel round-trips RawPixelsStore / direct | pixel MB received RawPixelsStore / direct | "
              "reading every plane alone, RawPixelsStore / direct (s) | "
              "CPU s script and workers + server, RawPixelsStore / direct |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        plate = f"{r['wells']} wells, {r['plane']} px, {r['channels']} ch"
        lines.append(f"| {plate} | {r['latency_ms']:g} | {R._fmt(r['server_s'])} | {R._fmt(r['direct_s'])} | "
                     f"{R._fmt(r[f'limit_{top}w_s'])} | {R._fmt(r[f'parallel_compute_{top}w_s'])} | "
                     f"{R._fmt(r['server_fraction_of_limit'])} | "
                     f"{R._fmt(r['direct_fraction_of_limit'])} | {R._fmt(r['direct_speedup'], 'x')} | "
                     f"{r['server_pixel_round_trips']} / {r['direct_pixel_round_trips']} | "
                     f"{_mb(r['server_pixel_bytes'])} / {_mb(r['direct_pixel_bytes'])} | "
                     f"{R._fmt(r['read_server_s'])} / {R._fmt(r['read_direct_s'])} | "
                     f"{R._fmt(r['server_cpu_s'])} + {R._fmt(r['server_server_cpu_s'])} / "
                     f"{R._fmt(r['direct_cpu_s'])} + {R._fmt(r['direct_server_cpu_s'])} |")
    lines += ["", "| target | wanted | measured | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        if "by_latency" in t:
            measured = ", ".join(f"{ms:g} ms: {R._fmt(v)}" for ms, v in t["by_latency"].items()) or "-"
        else:
            measured = "; ".join(f"{p} at {ms:g} ms: {d:.2f} s against {s:.2f} s" for p, ms, d, s in t["slower"]) \
                or "never slower"
        lines.append(f"| {t['target']} | {t['wanted']} | {measured} | {met} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """``--direct`` with parsed arguments: the table on stdout, the JSON (with every run's
    raw figures) into ``--out``; status 1 when the runners measured different things."""
    from openhcs_omero_lib.bench import options as O

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    settings = O.settings_from(args)
    realistic = args.realistic or ("none" if args.quick else realistic_spec(DEFAULT_REALISTIC))
    settings["realistic"] = None if realistic == "none" else realistic
    report = run_direct_benchmark(settings, cache=Path(args.cache) if args.cache else None, log=log)
    table = markdown(report)
    print(table)
    out = Path(args.out if args.out != O.DEFAULT_OUT else O.DIRECT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table)
    log(f"wrote {out}")
    bad = [plate for plate, c in report["consistent_results"].items() if not c["agree"]]
    if bad:
        log(f"the runners' results differ on {', '.join(bad)}: see consistent_results in {out}")
        return 1
    return 0


__all__ = ["DIRECT", "build", "markdown", "run", "run_direct_benchmark"]
