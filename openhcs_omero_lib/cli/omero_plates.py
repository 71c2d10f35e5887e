"""Commands on OMERO plates from a workstation: ``run --omero-plate`` and ``list-plates``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openhcs_omero_lib.cli.common import (
    RunFailed,
    UserError,
    check_output,
    load_pipeline,
    omero_connection,
    open_backend,
    picture_measurement,
    print_wells,
    progress_bar,
    tuning,
)


def server_failure(exc: BaseException, what: str) -> str:
    """One line for a run the server stopped; a bug's traceback goes to stderr first."""
    from openhcs_omero_lib.omero.script_support import failure_reason

    why = failure_reason(exc)
    if why is None:
        import traceback

        traceback.print_exc()
        why = f"{type(exc).__name__}: {exc}"
    return f"{what}: {why}"


def run_omero(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.omero.connection import disconnect
    from openhcs_omero_lib.omero.plate import OmeroInputError
    from openhcs_omero_lib.omero.run import prepare, run_on_plate
    from openhcs_omero_lib.omero.sink import ATTACH_CHOICES, OUTPUT_CHOICES
    from openhcs_omero_lib.plates.pixels import SourceNotReady
    from openhcs_omero_lib.results.sinks import LocalFolderSink

    spec = load_pipeline(args.pipeline)
    values = tuning(spec, args.set)
    attach = tuple(a for a in args.attach.split(",") if a)
    outputs = tuple(o for o in args.outputs.split(",") if o)
    unknown = sorted(set(attach) - set(ATTACH_CHOICES) | set(outputs) - set(OUTPUT_CHOICES))
    if unknown:
        raise UserError(f"unknown --attach/--outputs choices: {', '.join(unknown)}")
    if args.out:
        check_output(Path(args.out))
    conn = omero_connection(args)
    backend = None
    try:
        try:
            prepared = prepare(conn, "Plate", args.omero_plate, spec, runs=args.run, outputs=outputs, params=values,
                               pixel_access=args.pixel_access)
        except OmeroInputError as exc:
            raise UserError(str(exc)) from None
        except Exception as exc:
            raise RunFailed(server_failure(exc, "nothing attached")) from None
        measurements = [picture_measurement(args, bound) for _, bound in prepared]
        backend = open_backend(args)
        worst = 0
        for (plate, bound), measurement in zip(prepared, measurements):
            print(f"omero plate {plate.id}: {plate.layout.describe()}", file=sys.stderr)
            try:
                run = run_on_plate(conn, plate, bound, backend=backend, attach_to=attach, outputs=outputs,
                                   replace=not args.no_replace, progress=progress_bar(args.no_progress),
                                   heatmap=not args.no_heatmap, heatmap_measurement=measurement,
                                   save_rois=args.save_rois, roi_cap=args.max_rois, pixel_access=args.pixel_access)
            except SourceNotReady as exc:
                print(f"{exc}; nothing attached to it", file=sys.stderr)
                worst = 1
                continue
            except Exception as exc:
                raise RunFailed(server_failure(exc, f"plate {plate.id}: nothing attached")) from None
            if args.out:
                pictures = {}
                if not args.no_heatmap and run.report.count() and not run.report.heatmap_note:
                    from openhcs_omero_lib.pictures.heatmap import plate_heatmap

                    pictures["heatmap.png"] = plate_heatmap(
                        run.results.wells, plate.layout.rows, plate.layout.columns, plate=plate.layout.name,
                        pipeline=bound.name, measurement=measurement).png
                local = Path(args.out) / f"plate_{plate.id}"
                try:
                    LocalFolderSink(local, pictures).write(run.results)
                except OSError as exc:
                    raise RunFailed(f"plate {plate.id}: results attached, but cannot write the local copy "
                                    f"to {local}: {exc.strerror or exc}") from None
            print_wells(run.results)
            s = run.results.summary
            rois = run.report.rois
            print(f"plate {plate.id}: {s['timing']['units']} fields in {s['timing']['seconds']:.1f} s, "
                  f"{s['units_failed']} failed; attached {run.report.count()} annotations"
                  + (f" and {len(rois.rois)} ROIs" if rois is not None else "")
                  + f", replaced {run.report.replaced}")
            if run.access.note():
                print(f"plate {plate.id}: {run.access.note()}", file=sys.stderr)
            if rois is not None and rois.capped:
                print(f"plate {plate.id}: {rois.note()}", file=sys.stderr)
            if run.report.others:
                from openhcs_omero_lib.omero.annotations import describe_others

                print(f"plate {plate.id}: other users' results of this pipeline stay "
                      f"({describe_others(run.report.others)})")
            if s["units_failed"] == s["timing"]["units"]:
                worst = 1
        return worst
    finally:
        if backend is not None:
            backend.close()
        disconnect(conn)


def cmd_list_plates(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.omero.connection import disconnect
    from openhcs_omero_lib.omero.listing import list_plates

    conn = omero_connection(args)
    try:
        plates = list_plates(conn)
    finally:
        disconnect(conn)
    print(f"{'ID':>8}  {'wells':>5}  {'fields':>6}  {'channels':>8}  {'owner':<12} {'group':<12} name")
    for p in plates:
        print(f"{p.id:>8}  {p.wells:>5}  {p.fields:>6}  {p.channels:>8}  {p.owner:<12} {p.group:<12} {p.name}")
    if not plates:
        print("(no plates visible to this user)")
    return 0
