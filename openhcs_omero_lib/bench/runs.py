"""One measured run, in a process of its own.

    python -m openhcs_omero_lib.bench.runs < request.json

A fresh process per run makes its peak memory its own (``ru_maxrss`` only grows) and
starts every run cold (no layout cache, no warm connection pool). The request comes
on stdin as JSON (it holds the stand-in's login, which must not show in a process
list); the result goes to stdout as one JSON line. Timing starts once the process has
its imports and a logged-in connection, as a script in OMERO has.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import sys
import time
from collections import Counter
from typing import Any, Callable, Iterator

from openhcs_omero_lib.bench.memory import PeakMemory, peak_rss_mb


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    """Calls made between two snapshots, by ``service.method``."""
    diff = Counter(after["calls"])
    diff.subtract(before["calls"])
    return {k: v for k, v in sorted(diff.items()) if v}


def _server_cpu(after: dict[str, Any], before: dict[str, Any]) -> float:
    return round(after["cpu_seconds"] - before["cpu_seconds"], 3)


def _count_total(rows) -> float:
    """The sum of every ``*_count`` measurement: runs of the same pipeline on the
    same plate must agree on it."""
    return float(sum(v for row in rows for k, v in row.items()
                     if k.endswith("_count") and isinstance(v, (int, float)) and not math.isnan(v)))


def _login(connection: dict[str, Any]):
    from omero.gateway import BlitzGateway

    from openhcs_omero_lib.omero.connection import ServerAddress

    client = ServerAddress(connection["host"], connection["port"], connection["router"]).new_client()
    client.createSession(connection["user"], connection["password"])
    return BlitzGateway(client_obj=client)


@contextlib.contextmanager
def _logged_in(request: dict[str, Any]) -> Iterator[tuple[Any, Any, Any]]:
    """The stand-in's control line, a logged-in connection and the pipeline: what a
    script has before its clock starts (its imports include those of the pipeline's
    operations, which the library makes when a run starts)."""
    from openhcs_omero_lib.bench.standin import control_for
    from openhcs_omero_lib.pipeline import ops
    from openhcs_omero_lib.pipeline.loading import resolve_pipeline

    control = control_for(request["server"])
    conn = _login(request["server"])
    spec = resolve_pipeline(request["pipeline"])[0]
    for step in spec.steps:
        ops.import_for(step.op, getattr(step, "method", None))
    try:
        yield control, conn, spec
    finally:
        conn.close()
        control.close()


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its children that have ended (the workers,
    once the run has shut them down)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _bytes_received(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    """What the script received over Ice between two snapshots of the server's wire
    metrics: the replies of the pixel reads, and of every call."""
    def sent(ops) -> int:
        return sum(after.get(op, {}).get("reply_bytes", 0) - before.get(op, {}).get("reply_bytes", 0) for op in ops)

    return {"pixels": sent(PIXEL_READS), "all": sent(set(after) | set(before))}


PIXEL_READS = ("getPlane", "getStack", "getTile")


def run_ours(request: dict[str, Any]) -> dict[str, Any]:
    """What Run_HCS_Pipeline does: every plate's layout and spec checked, then computed
    with ``workers`` workers, then one CSV attached to the plate. ``pixel_access``
    (default ``server``: RawPixelsStore) is the script's Pixel_Access."""
    from openhcs_omero_lib.omero.run import prepare, run_on_plate

    access = request.get("pixel_access", "server")
    with _logged_in(request) as (control, conn, spec):
        with PeakMemory() as memory:
            before = control.snapshot()
            wire_before = control.request("wire")["wire"] if request.get("wire") else {}
            cpu_before = _cpu_with_children()
            start = time.perf_counter()
            [(plate, bound)] = prepare(conn, "Plate", [request["plate_id"]], spec, pixel_access=access)
            laid_out = control.snapshot()
            after_layout = peak_rss_mb()
            run = run_on_plate(conn, plate, bound, workers=request["workers"], attach_to=("plate",),
                               outputs=("csv",), replace=False, heatmap=False,  # the CSV only, as naive
                               pixel_access=access)
            seconds = time.perf_counter() - start
            cpu = _cpu_with_children() - cpu_before
            after = control.snapshot()
            wire = _bytes_received(control.request("wire")["wire"], wire_before) if request.get("wire") else None
        rows = run.results.images.to_dict("records")
        return {"seconds": seconds, "units": len(rows), "errors": len(run.results.errors),
                "pixel_access": run.access.summary(), "bytes_received": wire, "cpu_seconds": round(cpu, 3),
                "count_total": _count_total(rows), "layout_calls": _delta(laid_out, before),
                "run_calls": _delta(after, laid_out), "server_cpu_seconds": _server_cpu(after, before),
                "parent_peak_after_layout_mb": after_layout, **memory.report()}


def read_only(request: dict[str, Any]) -> dict[str, Any]:
    """Every plane of the plate read as ``pixel_access`` says (with its checks), one
    after another in one thread, nothing computed: what reading alone costs."""
    from openhcs_omero_lib.omero.direct_pixels import open_pixels
    from openhcs_omero_lib.omero.plate import load_plate

    with _logged_in(request) as (control, conn, _):
        plate = load_plate(conn, request["plate_id"], cache=None)
        layout = plate.layout
        start = time.perf_counter()
        source, access = open_pixels(conn, plate, request["pixel_access"])
        with source:
            planes = 0
            for unit in layout.units():
                for channel in range(1, len(layout.channels) + 1):
                    planes += len(source.read_stack(unit, channel))
        return {"seconds": time.perf_counter() - start, "planes": planes, "pixel_access": access.summary()}


def run_naive(request: dict[str, Any]) -> dict[str, Any]:
    from openhcs_omero_lib.bench.naive import measure_plate, upload_results

    with _logged_in(request) as (control, conn, spec):
        with PeakMemory() as memory:
            before = control.snapshot()
            start = time.perf_counter()
            plate, rows = measure_plate(conn, request["plate_id"], spec)
            measured = control.snapshot()
            upload_results(conn, plate, rows, f"{spec.name}_naive.csv")
            seconds = time.perf_counter() - start
            after = control.snapshot()
        return {"seconds": seconds, "units": len(rows), "errors": 0, "count_total": _count_total(rows),
                "work_calls": _delta(measured, before), "upload_calls": _delta(after, measured),
                "server_cpu_seconds": _server_cpu(after, before), **memory.report()}


def compute_only(request: dict[str, Any]) -> dict[str, Any]:
    """Every unit's pipeline, single-threaded, on pixels already in memory: the work
    that no way of reading pixels can avoid. Per-unit times are summed.

    With ``parts``, this process takes every ``parts``-th unit from ``part`` on, says
    ``ready`` once its pixels are loaded and starts computing when stdin says ``go``:
    the driver starts all parts together to see what the machine's cores really give."""
    from openhcs_omero_lib.engine import bind
    from openhcs_omero_lib.execution.allocator import keep_freed_memory
    from openhcs_omero_lib.pipeline.loading import resolve_pipeline
    from openhcs_omero_lib.pipeline.run import compile_unit
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    with ImageXpressSource(request["folder"]) as source:
        bound = bind(resolve_pipeline(request["pipeline"])[0], source.layout)
        channels = bound.channels_read()
        units = list(source.layout.units())[request.get("part", 0)::request.get("parts", 1)]
        pixels = [{c: source.read_stack(u, c) for c in channels} for u in units]
    keep_freed_memory()  # as the executor does
    run_unit = compile_unit(bound)  # once per run, as the executor does
    if pixels:
        run_unit(pixels[0].__getitem__)  # first use of each operation loads code: not work
    if "parts" in request:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()
    rows = []
    seconds = 0.0
    for planes in pixels:
        start = time.perf_counter()
        rows.append(run_unit(planes.__getitem__))
        seconds += time.perf_counter() - start
    return {"seconds": seconds, "units": len(rows), "errors": 0, "count_total": _count_total(rows)}


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ours": run_ours,
    "read": read_only,
    "naive": run_naive,
    "compute": compute_only,
}


def main() -> None:
    request = json.loads(sys.stdin.readline())
    result = RUNNERS[request["runner"]](request)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    # The result is out; tearing down numpy, scikit-image and omero would add a few
    # tenths of a second to each of the benchmark's ~80 runs. atexit still runs.
    atexit._run_exitfuncs()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
