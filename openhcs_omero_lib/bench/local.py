"""The local-plate comparison: ``openhcs-omero run`` against the plain loop.

On a plate folder of many small fields (96 wells x 9 fields of 256 px by default),
with the simple pipeline of :mod:`.plain_loop` (Gaussian, Otsu, small objects removed,
objects counted, channel 1), it runs ``openhcs-omero run`` with 1 and N workers and
the plain loop sequentially and in a ``Pool(N)``, each as a process of its own, timed
from its start to its exit (imports, reading, computing, writing: what a user waits
for), interleaved and repeated; times are medians. CPU time (user + system, the
process and its children) is recorded beside: on a machine that other work shares, it
says how much of a slow wall time was waiting. Every run must count the same nuclei
in every field.
"""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openhcs_omero_lib.bench.plain_loop import SIMPLE_PIPELINE

OURS, PLAIN = "openhcs-omero run", "plain loop"


def _cpu_of_children() -> float:
    try:
        import resource
    except ImportError:  # not on Unix
        return float("nan")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _counts(csv_path: Path) -> dict[tuple[str, int], int]:
    """Nuclei per (well, site) from a CSV with those columns: ``images.csv`` of
    ``openhcs-omero run``, or the plain loop's."""
    with open(csv_path, newline="") as fh:
        return {(r["well"], int(r["site"])): int(r["nuclei_count"]) for r in csv.DictReader(fh)}


def _command(runner: str, workers: int, plate: Path, spec: Path, out: Path) -> list[str]:
    if runner == OURS:
        return [sys.executable, "-m", "openhcs_omero_lib.cli", "run", str(plate), "--pipeline", str(spec),
                "--workers", str(workers), "--out", str(out), "--no-progress", "--no-heatmap"]
    return [sys.executable, "-m", "openhcs_omero_lib.bench.plain_loop", str(plate), "--workers", str(workers),
            "--out", str(out)]


def _one_run(runner: str, workers: int, plate: Path, spec: Path, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    out = tmp / ("ours" if runner == OURS else "plain.csv")
    cpu = _cpu_of_children()
    start = time.perf_counter()
    done = subprocess.run(_command(runner, workers, plate, spec, out), capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    cpu = _cpu_of_children() - cpu
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"{runner} with {workers} worker(s) failed (status {done.returncode}):\n{tail}")
    counts = _counts(out / "images.csv" if runner == OURS else out)
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "counts": counts}


def run_local(folder: Path, workers: list[int], repeats: int, env: dict[str, str], log=print) -> dict[str, Any]:
    """Every configuration ``repeats`` times, interleaved; medians and ratios."""
    configs = [(runner, w) for w in workers for runner in (OURS, PLAIN)]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="openhcs-omero-local-") as tmp:
        spec = Path(tmp) / "simple_count.yaml"
        spec.write_text(SIMPLE_PIPELINE)
        for repeat in range(repeats):
            for runner, w in configs:
                result = _one_run(runner, w, folder, spec, Path(tmp), env)
                runs[(runner, w)].append(result)
                log(f"[local {repeat + 1}/{repeats}] {runner}, {w} worker(s): {result['seconds']:.2f} s "
                    f"({result['cpu_seconds']:.2f} s CPU)")
    first = runs[configs[0]][0]["counts"]
    agree = all(r["counts"] == first for results in runs.values() for r in results)
    rows = []
    for runner, w in configs:
        results = runs[(runner, w)]
        rows.append({"runner": runner, "workers": w,
                     "seconds": statistics.median(r["seconds"] for r in results),
                     "seconds_all": [r["seconds"] for r in results],
                     "cpu_seconds": statistics.median(r["cpu_seconds"] for r in results)})
    plain = {row["workers"]: row["seconds"] for row in rows if row["runner"] == PLAIN}
    for row in rows:
        row["ratio_to_plain"] = round(row["seconds"] / plain[row["workers"]], 3) if plain[row["workers"]] else None
    return {"rows": rows, "fields": len(first), "nuclei": sum(first.values()), "same_counts": agree,
            "repeats": repeats}


TARGETS = {1: 1.1, 2: 1.2}
"""Largest wall time of ``openhcs-omero run`` over the plain loop, by workers."""


def targets(local: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for row in local["rows"]:
        if row["runner"] == OURS and row["workers"] in TARGETS:
            limit = TARGETS[row["workers"]]
            name = "sequential plain loop" if row["workers"] == 1 else f"plain Pool({row['workers']}) loop"
            out.append({"target": f"{row['workers']} worker(s) within {limit}x of the {name}",
                        "wanted": f"<= {limit}", "measured": row["ratio_to_plain"],
                        "met": None if row["ratio_to_plain"] is None else row["ratio_to_plain"] <= limit})
    return out


def markdown(local: dict[str, Any], plate: str) -> str:
    lines = [f"Local plate ({plate}, {local['fields']} fields), the `simple_count` pipeline "
             "(Gaussian, Otsu, small objects removed, objects counted; channel 1): whole-process wall time, "
             f"median of {local['repeats']} run(s); every run counted the same {local['nuclei']} nuclei in the same "
             f"fields: {'yes' if local['same_counts'] else '**no**'}.", "",
             "| runner | workers | wall (s) | CPU (s) | wall / plain loop |", "|---|---:|---:|---:|---:|"]
    for row in local["rows"]:
        if row["runner"] == OURS:
            name = OURS
        elif row["workers"] == 1:
            name = "plain loop (tifffile + scipy/scikit-image)"
        else:
            name = f"plain loop, Pool({row['workers']})"
        lines.append(f"| {name} | {row['workers']} | {row['seconds']:.2f} | {row['cpu_seconds']:.2f} | "
                     f"{row['ratio_to_plain']:.2f}x |")
    lines += ["", "| target | wanted | measured | met |", "|---|---|---|---|"]
    for t in targets(local):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['wanted']} | {t['measured']} | {met} |")
    return "\n".join(lines) + "\n"
