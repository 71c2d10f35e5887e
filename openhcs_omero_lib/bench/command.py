"""``openhcs-omero bench`` / ``python -m bench``: the benchmark's command line and driver.

For every plate size it runs, each ``--repeats`` times and interleaved so that a
change in the machine's load hits every configuration alike:

- the pipeline on pixels already in memory, single-threaded (the compute-bound limit);
- openhcs-omero over the OMERO stand-in with 1 and N workers, at each latency;
- the naive BlitzGateway script over the same stand-in, at each latency;
- OpenHCS with N workers on the plate folder, when it is installed.

Each run is a fresh process (see :mod:`.runs`); the stand-in is another one
(:mod:`.standin`).
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
from openhcs_omero_lib.bench.plates import PlateSpec, plate_folder

DEFAULT_SIZES = "24,96,384"
DEFAULT_LATENCIES = "0,1,5"
DEFAULT_PLATE = {"sites": 2, "channels": 2, "plane": 160}
DEFAULT_OPENHCS_MAX_WELLS = 96
DEFAULT_OUT = "results/bench-results.json"
DIRECT_OUT = "results/bench-direct.json"
LARGE_PLATE = 96
"""Plates with more wells than this run ``--large-repeats`` times (their runs are long,
so less noisy, and repeating them would triple the benchmark's time)."""
QUICK = {"sizes": "2,4", "sites": 2, "channels": 2, "plane": 64, "repeats": 1}


def _numbers(text: str, kind: type, minimum: float, what: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what} separated by commas, got {text!r}") from None
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(f"expected numbers of at least {minimum}, got {text!r}")
    return values


def _int_list(text: str) -> list[int]:
    return _numbers(text, int, 1, "whole numbers")


def _float_list(text: str) -> list[float]:
    return _numbers(text, float, 0, "numbers")


def _positive(text: str) -> int:
    value = _int_list(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one whole number, got {text!r}")
    return value[0]


def _plane(text: str) -> int:
    value = _positive(text)
    if value < 64:
        raise argparse.ArgumentTypeError(f"planes are at least 64 pixels, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options, for ``openhcs-omero bench`` and ``python -m bench``."""
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny plates ({QUICK['sizes']} wells, {QUICK['plane']} px), one repeat: "
                             "checks that everything runs, says nothing about speed")
    parser.add_argument("--sizes", type=_int_list, default=None, metavar="N,N,...",
                        help=f"plate sizes in wells (default {DEFAULT_SIZES})")
    parser.add_argument("--sites", type=_positive, default=None,
                        help=f"sites per well (default {DEFAULT_PLATE['sites']})")
    parser.add_argument("--channels", type=int, choices=range(1, 5), default=None, metavar="1-4",
                        help=f"channels (default {DEFAULT_PLATE['channels']})")
    parser.add_argument("--plane", type=_plane, default=None,
                        help=f"plane size in pixels, at least 64 (default {DEFAULT_PLATE['plane']})")
    parser.add_argument("--latencies", type=_float_list, default=None, metavar="MS,MS,...",
                        help=f"simulated latency per server call, ms (default {DEFAULT_LATENCIES})")
    parser.add_argument("--workers", type=_positive, default=2, help="the larger worker count (default 2)")
    parser.add_argument("--repeats", type=_positive, default=None,
                        help="runs per configuration, the median is reported (default 3)")
    parser.add_argument("--large-repeats", type=_positive, default=None, metavar="N",
                        help=f"runs per configuration on plates of more than {LARGE_PLATE} wells (default 1)")
    parser.add_argument("--openhcs-repeats", type=_positive, default=None, metavar="N",
                        help="runs of OpenHCS per plate (default 1: it is several times slower, so its "
                             "run-to-run noise cannot change a comparison)")
    parser.add_argument("--pipeline", default="nuclei_count", help="preset (default nuclei_count)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument("--markdown", default=None, metavar="FILE", help="also write the table to FILE")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="where plates are kept (default ~/.cache/openhcs-omero/bench-plates)")
    parser.add_argument("--skip-openhcs", action="store_true", help="do not run OpenHCS")
    parser.add_argument("--openhcs-max-wells", type=_positive, default=DEFAULT_OPENHCS_MAX_WELLS, metavar="N",
                        help="run OpenHCS only on plates of at most N wells (default "
                             f"{DEFAULT_OPENHCS_MAX_WELLS}: it takes minutes and gigabytes on 384)")
    parser.add_argument("--openhcs-python", default=None, metavar="PYTHON",
                        help="a Python that has openhcs (default: $OPENHCS_PYTHON, the cached OpenHCS "
                             "environment, or this Python)")
    parser.add_argument("--install-openhcs", action="store_true",
                        help="first install OpenHCS (CPU only, about 1.5 GB) into its own cached environment")
    parser.add_argument("--direct", action="store_true",
                        help="instead: RawPixelsStore against direct reads from the managed repository "
                             "(Pixel_Access server and auto), on the plates and on --realistic "
                             f"(JSON: {DIRECT_OUT} unless --out)")
    parser.add_argument("--realistic", type=_realistic, default=None, metavar="WELLS,SITES,CHANNELS,PLANE",
                        help="with --direct: the plate of realistic planes, or none (default 24,2,3,1024; "
                             "--quick: none)")


def _realistic(text: str):
    from openhcs_omero_lib.bench.plates import realistic_spec

    try:
        return realistic_spec(text) or "none"
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = QUICK if args.quick else {}
    return {
        "sizes": args.sizes or _int_list(quick.get("sizes", DEFAULT_SIZES)),
        "sites": args.sites or quick.get("sites", DEFAULT_PLATE["sites"]),
        "channels": args.channels or quick.get("channels", DEFAULT_PLATE["channels"]),
        "plane": args.plane or quick.get("plane", DEFAULT_PLATE["plane"]),
        "openhcs_max_wells": args.openhcs_max_wells,
        "latencies_ms": args.latencies if args.latencies is not None else _float_list(DEFAULT_LATENCIES),
        "workers": sorted({1, args.workers}),
        "repeats": args.repeats or quick.get("repeats", 3),
        "large_repeats": args.large_repeats or quick.get("repeats", 1),
        "openhcs_repeats": args.openhcs_repeats or 1,
        "pipeline": args.pipeline,
    }


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
    parser = argparse.ArgumentParser(prog="openhcs-omero bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run with parsed arguments (``openhcs-omero bench`` calls this, through the package's
    ``run``, which sends ``--direct`` to :mod:`.direct`)."""
    if getattr(args, "direct", False):
        raise ValueError("--direct is run by openhcs_omero_lib.bench.run")
    settings = _settings(args)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

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
    report = run_benchmark(settings, cache=Path(args.cache) if args.cache else None,
                           openhcs_python=openhcs_python, openhcs_note=note, log=log)
    table = R.markdown(report)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table)
    log(f"wrote {out}")
    bad = [wells for wells, c in report["consistent_results"].items() if not c["agree"]]
    if bad:
        log(f"the runners' results differ on the {', '.join(bad)}-well plate(s): see consistent_results in {out}")
        return 1
    return 0


__all__ = ["add_arguments", "main", "run"]
