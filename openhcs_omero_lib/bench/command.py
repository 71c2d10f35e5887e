"""``python -m bench`` (``python -m openhcs_omero_lib.bench`` installed): the benchmark's command line and driver.

Three parts, all by default, or those named with ``--omero``, ``--ops`` and
``--plain-loop``:

- **omero**: for every plate size, each ``--repeats`` times and interleaved so that a
  change in the machine's load hits every configuration alike: the pipeline on pixels
  already in memory, single-threaded (the compute-bound limit); openhcs-omero over the
  OMERO stand-in with 1 and N workers, at each latency; the naive BlitzGateway script
  over the same stand-in, at each latency; OpenHCS with N workers on the plate
  folder, when it is installed. Each run is a fresh process (see :mod:`.runs`); the
  stand-in is another one (:mod:`.standin`).
- **ops**: every operation of the presets against a plain reference formulation, on
  1024 and 2048 px fields (:mod:`.ops_table`).
- **plain-loop**: ``openhcs-omero run`` on a local plate of many small fields against
  a plain tifffile + scipy/scikit-image loop, sequential and in a process pool
  (:mod:`.local`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openhcs_omero_lib.bench import report as R
from openhcs_omero_lib.bench.options import LARGE_PLATE, add_arguments, settings_from


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cpu": cpu, "cores": cores, "python": platform.python_version(), "system": platform.platform()}


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _run_process(request: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "openhcs_omero_lib.bench.runs"], input=json.dumps(request),
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"{request['runner']} run failed (status {out.returncode}):\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compute_parallel(folder: Path, pipeline: str, parts: int, env: dict[str, str]) -> dict[str, Any]:
    """The units split over ``parts`` processes that load their pixels first and then
    compute together: what this machine's cores give with no I/O and no start-up."""
    procs = [subprocess.Popen([sys.executable, "-m", "openhcs_omero_lib.bench.runs"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(parts)]
    try:
        for part, proc in enumerate(procs):
            request = {"runner": "compute", "folder": str(folder), "pipeline": pipeline, "part": part, "parts": parts}
            proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                raise RuntimeError("a parallel compute process did not start")
        for proc in procs:
            proc.stdin.write("go\n")  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        results = [json.loads(proc.stdout.read().strip().splitlines()[-1]) for proc in procs]  # type: ignore[union-attr]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.wait(timeout=600)
    return {"seconds": max(r["seconds"] for r in results), "units": sum(r["units"] for r in results),
            "errors": 0, "count_total": sum(r["count_total"] for r in results),
            "part_seconds": [round(r["seconds"], 3) for r in results]}


def _environment(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    # omero-py makes a temporary-file folder on import; keep it out of the user's home.
    env.setdefault("OMERO_TMPDIR", str(tmp / "omero"))
    # One thread per process for every tool, so that "N workers" means N cores' worth.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "1"
    return env


def run_benchmark(settings: dict[str, Any], *, cache: Path | None, openhcs_python: str | None,
                  openhcs_note: str, log=print) -> dict[str, Any]:
    from openhcs_omero_lib.bench.plates import PlateSpec, plate_folder

    sizes, latencies, workers = settings["sizes"], settings["latencies_ms"], settings["workers"]
    specs = {w: PlateSpec(w, settings["sites"], settings["channels"], settings["plane"]) for w in sizes}
    folders = {}
    for wells, spec in specs.items():
        started = time.perf_counter()
        folders[wells] = plate_folder(spec, cache)
        log(f"plate {spec.describe()}: {folders[wells]} ({time.perf_counter() - started:.1f} s)")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {str(w): {} for w in sizes}
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="openhcs-omero-bench-") as tmp:
        env = _environment(Path(tmp))
        from openhcs_omero_lib.bench.standin import StandInProcess

        with StandInProcess(env) as server:
            plate_ids = {w: server.import_plate(str(folders[w])) for w in sizes}
            jobs = _jobs(sizes, latencies, workers,
                         settings["openhcs_max_wells"] if openhcs_python is not None else 0)
            total = sum(_repeats(settings, wells, runner) for wells, runner, _, _ in jobs)
            done = 0
            for repeat in range(max(settings["repeats"], settings["large_repeats"], settings["openhcs_repeats"])):
                for wells, runner, n, latency in jobs:
                    if repeat >= _repeats(settings, wells, runner):
                        continue
                    done += 1
                    if runner == R.OPENHCS and openhcs_python is None:
                        continue  # an earlier OpenHCS run failed
                    try:
                        result = _run_job(runner, n, latency, folder=folders[wells], plate_id=plate_ids[wells],
                                          server=server, settings=settings, env=env, openhcs_python=openhcs_python)
                    except RuntimeError as exc:
                        if runner != R.OPENHCS:
                            raise
                        # OpenHCS is a peer, not ours: its failure is reported, not fatal.
                        openhcs_python, openhcs_note = None, f"failed: {str(exc).splitlines()[-1]}"
                        log(f"OpenHCS {openhcs_note}")
                        continue
                    key = R.run_key(runner, n, latency)
                    raw[str(wells)].setdefault(key, []).append(result)
                    log(f"[{done}/{total}] {wells} wells, {key}: {result['seconds']:.2f} s")
    report = R.build(raw, sizes=sizes, latencies_ms=latencies, workers=workers, openhcs_note=openhcs_note)
    report["meta"] = {"date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
                      "machine": {**_machine(), "load_before": load_before, "load_after": _load()},
                      "pipeline": settings["pipeline"], "workers": workers,
                      "repeats": {"plates": settings["repeats"], f"plates over {LARGE_PLATE} wells":
                                  settings["large_repeats"], "openhcs": settings["openhcs_repeats"]},
                      "latencies_ms": latencies, "sizes": sizes,
                      "plate": f"{settings['sites']} sites x {settings['channels']} channels, "
                               f"{settings['plane']}x{settings['plane']} px",
                      "units": {str(w): specs[w].units for w in sizes}}
    report["consistent_results"] = _consistent(raw)
    report["raw"] = raw
    return report


def _repeats(settings: dict[str, Any], wells: int, runner: str) -> int:
    if runner == R.OPENHCS:
        return settings["openhcs_repeats"]
    return settings["large_repeats"] if wells > LARGE_PLATE else settings["repeats"]


def _run_job(runner: str, workers: int, latency: float | None, *, folder: Path, plate_id: int, server,
             settings: dict[str, Any], env: dict[str, str], openhcs_python: str | None) -> dict[str, Any]:
    pipeline = settings["pipeline"]
    if runner == R.OPENHCS:
        from openhcs_omero_lib.bench.openhcs_runner import run_peer

        return run_peer(openhcs_python, folder, workers, pipeline, env)  # type: ignore[arg-type]
    if runner == R.COMPUTE and workers == 1:
        return _run_process({"runner": "compute", "folder": str(folder), "pipeline": pipeline}, env)
    if runner == R.COMPUTE:
        return _compute_parallel(folder, pipeline, workers, env)
    server.set_latency((latency or 0) / 1000)
    return _run_process({"runner": "ours" if runner == R.OURS else "naive", "server": server.connection,
                         "plate_id": plate_id, "workers": workers, "pipeline": pipeline}, env)


def _jobs(sizes, latencies, workers, openhcs_max_wells: int) -> list[tuple[int, str, int, float | None]]:
    top = max(workers)
    jobs: list[tuple[int, str, int, float | None]] = []
    for wells in sizes:
        jobs.append((wells, R.COMPUTE, 1, None))
        if top > 1:
            jobs.append((wells, R.COMPUTE, top, None))
        for latency in latencies:
            jobs += [(wells, R.OURS, n, latency) for n in workers]
            jobs.append((wells, R.NAIVE, 1, latency))
        if wells <= openhcs_max_wells:
            jobs.append((wells, R.OPENHCS, top, None))
    return jobs


def _consistent(raw) -> dict[str, Any]:
    """Whether every runner measured the same thing on each plate (same sites, same
    total of ``*_count`` columns): the comparison is of equal work."""
    out = {}
    for wells, runs in raw.items():
        seen = {(r["units"], round(r["count_total"], 6)) for results in runs.values() for r in results}
        out[wells] = {"agree": len(seen) == 1, "units_and_count_totals": sorted(seen)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run with parsed arguments (another command line may call this; the package's
    ``run`` sends ``--direct`` to :mod:`.direct`)."""
    if getattr(args, "direct", False):
        raise ValueError("--direct is run by openhcs_omero_lib.bench.run")
    settings = settings_from(args)
    parts = settings["parts"]

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    cache = Path(args.cache) if args.cache else None
    load_before = _load()
    report: dict[str, Any] = {}
    if "omero" in parts:
        report.update(_run_omero_part(args, settings, cache, log))
    if "ops" in parts:
        from openhcs_omero_lib.bench import ops_table
        from openhcs_omero_lib.bench.plates import default_cache

        wells = list(ops_table.FIELD_WELLS[:settings["op_fields"]])
        report["ops"] = ops_table.run_ops(settings["op_sizes"], wells, settings["op_repeats"],
                                          (cache or default_cache()) / "fields", log=log)
    if "local" in parts:
        report["local"] = _run_local_part(settings, cache, log)
    meta = report.setdefault("meta", {"date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
                                      "machine": {**_machine(), "load_before": load_before}})
    meta["machine"]["load_before"] = load_before
    meta["machine"]["load_after"] = _load()
    meta["parts"] = parts
    table = markdown(report)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table)
    log(f"wrote {out}")
    status = 0
    bad = [wells for wells, c in report.get("consistent_results", {}).items() if not c["agree"]]
    if bad:
        log(f"the runners' results differ on the {', '.join(bad)}-well plate(s): see consistent_results in {out}")
        status = 1
    differing = sorted({r["op"] for r in report.get("ops", {}).get("rows", []) if not r["same_output"]})
    if differing:
        log(f"the library and the reference disagree on: {'; '.join(differing)}")
        status = 1
    if "local" in report and not report["local"]["same_counts"]:
        log("openhcs-omero run and the plain loop counted different nuclei")
        status = 1
    return status


def _run_omero_part(args: argparse.Namespace, settings: dict[str, Any], cache: Path | None, log) -> dict[str, Any]:
    openhcs_python, note = None, "skipped: --skip-openhcs"
    if not args.skip_openhcs:
        from openhcs_omero_lib.bench.openhcs_runner import find_python, install

        if args.install_openhcs:
            log("installing OpenHCS into its own environment (once; about 1.5 GB)")
            install()
        openhcs_python, note = find_python(args.openhcs_python)
        if openhcs_python and any(w > args.openhcs_max_wells for w in settings["sizes"]):
            note += f", run on plates of at most {args.openhcs_max_wells} wells (--openhcs-max-wells)"
    log(f"OpenHCS: {note}")
    return run_benchmark(settings, cache=cache, openhcs_python=openhcs_python, openhcs_note=note, log=log)


def _run_local_part(settings: dict[str, Any], cache: Path | None, log) -> dict[str, Any]:
    from openhcs_omero_lib.bench.local import run_local
    from openhcs_omero_lib.bench.plates import PlateSpec, plate_folder

    wells, sites, plane = settings["local_plate"]
    spec = PlateSpec(wells, sites, 2, plane)
    folder = plate_folder(spec, cache)
    log(f"local plate {spec.describe()}: {folder}")
    with tempfile.TemporaryDirectory(prefix="openhcs-omero-bench-") as tmp:
        local = run_local(folder, settings["workers"], settings["repeats"], _environment(Path(tmp)), log=log)
    local["plate"] = spec.describe()
    return local


def markdown(report: dict[str, Any]) -> str:
    """Every part's tables, one after another."""
    from openhcs_omero_lib.bench import local, ops_table

    meta = report["meta"]
    if "rows" in report:
        sections = [R.markdown(report)]
    else:
        sections = [f"Benchmark of {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['cores']} cores), "
                    f"load average before/after {meta['machine']['load_before']}/{meta['machine']['load_after']}.\n"]
    if "ops" in report:
        sections.append(ops_table.markdown(report["ops"]))
    if "local" in report:
        sections.append(local.markdown(report["local"], report["local"]["plate"]))
    return "\n".join(sections)


__all__ = ["add_arguments", "main", "run"]
