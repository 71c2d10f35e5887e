"""From the runs' raw results to ratios, targets, a markdown table and JSON.

Every figure compared comes from one invocation: times are medians over its repeats,
round-trips and memory come from the same runs.
"""

from __future__ import annotations

import statistics
from typing import Any

OURS, NAIVE, OPENHCS, COMPUTE = "openhcs-omero", "naive", "openhcs", "compute"

LAYOUT_SERVICES = ("IQuery.", "IContainer.")
PIXEL_SERVICES = ("RawPixelsStore.", "ServiceFactory.createRawPixelsStore")

TARGETS = {
    "fraction_of_limit": 0.90,
    "speedup_vs_naive_1ms": 1.8,
    "speedup_vs_naive_5ms": 5.0,
    "speedup_vs_openhcs": 1.0,
    "parent_memory_growth": 0.10,
}


def run_key(runner: str, workers: int, latency_ms: float | None) -> str:
    where = "" if latency_ms is None else f"@{latency_ms:g}ms"
    return f"{runner}/{workers}w{where}"


def _count(calls: dict[str, int], prefixes: tuple[str, ...]) -> int:
    return sum(n for key, n in calls.items() if key.startswith(prefixes))


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarise_runs(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median time and the other figures of the repeats of one configuration."""
    seconds = [r["seconds"] for r in results]
    first = results[0]
    out: dict[str, Any] = {"seconds": round(_median(seconds), 3), "seconds_all": [round(s, 3) for s in seconds],
                           "units": first["units"], "errors": max(r["errors"] for r in results),
                           "count_total": first["count_total"]}
    if "parent_peak_mb" in first:
        out["parent_peak_mb"] = max(r["parent_peak_mb"] for r in results)
        workers = [w for r in results for w in r["worker_peak_mb"]]
        out["worker_peak_mb"] = max(workers) if workers else None
    if "parent_peak_after_layout_mb" in first:
        out["parent_peak_after_layout_mb"] = max(r["parent_peak_after_layout_mb"] for r in results)
    if "server_cpu_seconds" in first:
        out["server_cpu_seconds"] = round(_median([r["server_cpu_seconds"] for r in results]), 3)
    if "layout_calls" in first:  # openhcs-omero: layout while preparing, the rest while running
        work = first["run_calls"]
        out["layout_round_trips"] = _count(first["layout_calls"], LAYOUT_SERVICES)
        out["pixel_round_trips"] = _count(work, PIXEL_SERVICES)
        out["calls"] = {"layout": first["layout_calls"], "run_and_upload": work}
    elif "work_calls" in first:  # naive: layout and pixels interleave; the upload comes last
        work = first["work_calls"]
        out["layout_round_trips"] = _count(work, LAYOUT_SERVICES)
        out["pixel_round_trips"] = _count(work, PIXEL_SERVICES)
        out["calls"] = {"work": work, "upload": first["upload_calls"]}
    return out


def build(raw: dict[str, dict[str, list[dict[str, Any]]]], *, sizes: list[int], latencies_ms: list[float],
          workers: list[int], openhcs_note: str) -> dict[str, Any]:
    """``raw[wells][run_key]`` -> the report (plates, table rows, targets)."""
    plates = []
    for wells in sizes:
        runs = {key: summarise_runs(results) for key, results in raw[str(wells)].items() if results}
        compute = runs.get(run_key(COMPUTE, 1, None))
        limit = {str(w): round(compute["seconds"] / w, 3) for w in workers} if compute else {}
        parallel = runs.get(run_key(COMPUTE, max(workers), None)) if max(workers) > 1 else None
        plates.append({"wells": wells, "units": compute["units"] if compute else None,
                       "compute_seconds": compute["seconds"] if compute else None,
                       "limit_seconds": limit,
                       "parallel_compute_seconds": parallel["seconds"] if parallel else None,
                       "runs": runs})
    rows = [_row(plate, latency, workers) for plate in plates for latency in latencies_ms]
    report: dict[str, Any] = {"plates": plates, "rows": rows, "openhcs": openhcs_note}
    report["round_trips"] = [_round_trips(p, latencies_ms) for p in plates]
    report["memory"] = [_memory(p, latencies_ms, max(workers)) for p in plates]
    report["targets"] = _targets(report)
    return report


def _row(plate: dict[str, Any], latency: float, workers: list[int]) -> dict[str, Any]:
    runs = plate["runs"]
    top = max(workers)
    row: dict[str, Any] = {"wells": plate["wells"], "latency_ms": latency}
    for w in workers:
        ours = runs.get(run_key(OURS, w, latency))
        row[f"ours_{w}w_s"] = ours["seconds"] if ours else None
    naive = runs.get(run_key(NAIVE, 1, latency))
    peer = runs.get(run_key(OPENHCS, top, None))
    row["naive_s"] = naive["seconds"] if naive else None
    row[f"openhcs_{top}w_s"] = peer["seconds"] if peer else None
    row[f"limit_{top}w_s"] = plate["limit_seconds"].get(str(top))
    row[f"parallel_compute_{top}w_s"] = plate["parallel_compute_seconds"]
    best = row[f"ours_{top}w_s"]
    row["speedup_vs_naive"] = _ratio(row["naive_s"], best)
    row["speedup_vs_openhcs"] = _ratio(row[f"openhcs_{top}w_s"], best)
    row["fraction_of_limit"] = _ratio(row[f"limit_{top}w_s"], best)
    row["fraction_of_parallel_compute"] = _ratio(plate["parallel_compute_seconds"], best)
    for w in workers:
        if w != top:
            row[f"fraction_of_limit_{w}w"] = _ratio(plate["limit_seconds"].get(str(w)), row[f"ours_{w}w_s"])
    return row


def _first(runs: dict[str, Any], runner: str, workers: int, latencies: list[float]) -> dict[str, Any] | None:
    for latency in latencies:
        found = runs.get(run_key(runner, workers, latency))
        if found:
            return found
    return None


def _round_trips(plate: dict[str, Any], latencies: list[float]) -> dict[str, Any]:
    """Round-trips do not depend on latency or workers: read from the first run."""
    ours = _first(plate["runs"], OURS, 1, latencies) or {}
    naive = _first(plate["runs"], NAIVE, 1, latencies) or {}
    return {"wells": plate["wells"], "units": plate["units"],
            "ours_layout": ours.get("layout_round_trips"), "ours_pixels": ours.get("pixel_round_trips"),
            "naive_layout": naive.get("layout_round_trips"), "naive_pixels": naive.get("pixel_round_trips"),
            "ours_calls": ours.get("calls"), "naive_calls": naive.get("calls")}


def _memory(plate: dict[str, Any], latencies: list[float], top: int) -> dict[str, Any]:
    runs = plate["runs"]

    def worst(runner: str, workers: int, field: str, latency_free: bool = False) -> float | None:
        keys = [run_key(runner, workers, None)] if latency_free else [run_key(runner, workers, x) for x in latencies]
        values = [runs[k][field] for k in keys if k in runs and runs[k].get(field) is not None]
        return max(values) if values else None

    return {"wells": plate["wells"],
            "ours_parent_peak_mb": worst(OURS, top, "parent_peak_mb"),
            "ours_parent_peak_after_layout_mb": worst(OURS, top, "parent_peak_after_layout_mb"),
            "ours_worker_peak_mb": worst(OURS, top, "worker_peak_mb"),
            "ours_1w_peak_mb": worst(OURS, 1, "parent_peak_mb"),
            "naive_peak_mb": worst(NAIVE, 1, "parent_peak_mb"),
            "openhcs_parent_peak_mb": worst(OPENHCS, top, "parent_peak_mb", True),
            "openhcs_worker_peak_mb": worst(OPENHCS, top, "worker_peak_mb", True)}


def _targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its value on every plate; met when every plate meets it."""
    rows = report["rows"]
    targets = []

    def per_plate(name: str, wanted: str, values: dict[int, float | None], ok, where: str) -> None:
        values = {w: v for w, v in values.items() if v is not None}
        met = all(ok(v) for v in values.values()) if values else None
        targets.append({"target": name, "wanted": wanted, "by_plate": values,
                        "met_on": [w for w, v in values.items() if ok(v)], "met": met, "where": where})

    def column(key: str, latency: float | None) -> dict[int, float | None]:
        out: dict[int, float | None] = {}
        for r in rows:
            if latency is None or r["latency_ms"] == latency:
                value = r[key]
                if value is not None:
                    out[r["wells"]] = value if r["wells"] not in out else min(out[r["wells"]], value)  # type: ignore[type-var]
                else:
                    out.setdefault(r["wells"], None)
        return out

    # A target whose latency was not run is listed as not measured.
    per_plate("fraction of the compute-bound limit, 2 workers", ">= 0.90", column("fraction_of_limit", 0),
              lambda v: v >= TARGETS["fraction_of_limit"], "0 ms/call (at 1 and 5 ms the runs wait on latency)")
    for ms, key in ((1, "speedup_vs_naive_1ms"), (5, "speedup_vs_naive_5ms")):
        per_plate(f"speed-up over the naive script at {ms} ms/call", f">= {TARGETS[key]}",
                  column("speedup_vs_naive", ms), lambda v, k=key: v >= TARGETS[k], "openhcs-omero, 2 workers")
    per_plate("faster than OpenHCS on the same plate and pipeline", "> 1.0", column("speedup_vs_openhcs", None),
              lambda v: v > TARGETS["speedup_vs_openhcs"], "lowest over latencies (OpenHCS reads local files)")
    trips = report["round_trips"]
    smallest, biggest = trips[0], trips[-1]
    same = None if len(trips) < 2 or smallest["ours_layout"] is None else \
        smallest["ours_layout"] == biggest["ours_layout"]
    targets.append({"target": f"layout round-trips the same for {smallest['wells']} and {biggest['wells']} wells",
                    "wanted": "equal", "by_plate": {t["wells"]: t["ours_layout"] for t in trips},
                    "met": same, "where": "openhcs-omero"})
    memory = report["memory"]
    if len(memory) >= 2:
        before, after = memory[-2], memory[-1]
        growth = None
        if before["ours_parent_peak_mb"] and after["ours_parent_peak_mb"]:
            growth = round(after["ours_parent_peak_mb"] / before["ours_parent_peak_mb"] - 1, 3)
        where = "openhcs-omero, 2 workers"
        if all(m["ours_parent_peak_after_layout_mb"] for m in (before, after)):
            where += (f"; peak once the layout is loaded {before['ours_parent_peak_after_layout_mb']:.0f} -> "
                      f"{after['ours_parent_peak_after_layout_mb']:.0f} MB")
        targets.append({"target": f"parent peak memory growth from {before['wells']} to {after['wells']} wells",
                        "wanted": "< 10%", "by_plate": {m["wells"]: m["ours_parent_peak_mb"] for m in memory},
                        "growth": growth,
                        "met": None if growth is None else growth < TARGETS["parent_memory_growth"], "where": where})
    return targets


# ---- markdown ----------------------------------------------------------------------------------

def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}{unit}"
        return f"{value:.2f}{unit}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}{unit}"
    return f"{value}{unit}"


def _repeats(repeats: dict[str, int]) -> str:
    return ", ".join(f"{n} run{'s' if n != 1 else ''} ({what})" for what, n in repeats.items())


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    top = max(meta["workers"])
    lines = [f"Benchmark of {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['cores']} cores), "
             f"load average before/after {meta['machine']['load_before']}/{meta['machine']['load_after']}; "
             f"pipeline `{meta['pipeline']}`; plates of {meta['plate']}; times are medians of "
             f"{_repeats(meta['repeats'])}. "
             f"OpenHCS: {report['openhcs']}.", ""]
    lines += [f"| wells | ms/call | ours 1 worker (s) | ours {top} workers (s) | naive script (s) | "
              f"OpenHCS {top} workers (s) | compute-bound limit {top} workers (s) | "
              f"measured parallel compute {top} processes (s) | speed-up over naive | "
              f"speed-up over OpenHCS | fraction of limit |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['wells']} | {r['latency_ms']:g} | {_fmt(r.get('ours_1w_s'))} | "
                     f"{_fmt(r[f'ours_{top}w_s'])} | "
                     f"{_fmt(r['naive_s'])} | {_fmt(r[f'openhcs_{top}w_s'])} | {_fmt(r[f'limit_{top}w_s'])} | "
                     f"{_fmt(r[f'parallel_compute_{top}w_s'])} | "
                     f"{_fmt(r['speedup_vs_naive'], 'x')} | {_fmt(r['speedup_vs_openhcs'], 'x')} | "
                     f"{_fmt(r['fraction_of_limit'])} |")
    lines += ["", "| wells | units | layout round-trips ours | pixel round-trips ours | layout round-trips naive | "
              "pixel round-trips naive | parent peak MB ours | worker peak MB ours | peak MB naive | "
              "parent / worker peak MB OpenHCS |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for trips, mem in zip(report["round_trips"], report["memory"]):
        lines.append(f"| {trips['wells']} | {trips['units']} | {_fmt(trips['ours_layout'])} | "
                     f"{_fmt(trips['ours_pixels'])} | {_fmt(trips['naive_layout'])} | {_fmt(trips['naive_pixels'])} | "
                     f"{_fmt(mem['ours_parent_peak_mb'])} | {_fmt(mem['ours_worker_peak_mb'])} | "
                     f"{_fmt(mem['naive_peak_mb'])} | {_fmt(mem['openhcs_parent_peak_mb'])} / "
                     f"{_fmt(mem['openhcs_worker_peak_mb'])} |")
    if any(mem["ours_worker_peak_mb"] is None for mem in report["memory"]):
        lines += ["", "A worker peak of - means that no worker process was started: the work was "
                      "done by the script's own process before workers looked worth starting."]
    lines += ["", "| target | wanted | measured, by plate (wells: value) | met | where |", "|---|---|---|---|---|"]
    for t in report["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        if t["met"] is False and t.get("met_on"):
            met = f"**no** (yes on {', '.join(str(w) for w in t['met_on'])} wells)"
        measured = ", ".join(f"{w}: {_fmt(v)}" for w, v in t["by_plate"].items()) or "-"
        if "growth" in t:
            measured = f"{t['growth'] * 100:+.1f}% ({measured} MB)" if t["growth"] is not None else "-"
        lines.append(f"| {t['target']} | {t['wanted']} | {measured} | {met} | {t['where']} |")
    return "\n".join(lines) + "\n"
