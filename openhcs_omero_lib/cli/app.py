"""The ``openhcs-omero`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from openhcs_omero_lib import __version__

DEMO_CONFIG = dict(wells=24, sites=2, channels=2, size=256, seed=2026, touching=True, name="DEMO")
DEMO_VERSION = 1


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "openhcs-omero"


def demo_plate() -> Path:
    """The demo plate, generated on first use into the cache (atomically)."""
    from openhcs_omero_lib.plates.synthetic import SyntheticPlateConfig, make_plate, write_once

    target = cache_dir() / f"demo-plate-v{DEMO_VERSION}"

    def write(folder: Path) -> None:
        print(f"generating the demo plate in {target} (once)", file=sys.stderr)
        make_plate(folder, SyntheticPlateConfig(**DEMO_CONFIG))

    return write_once(target, "ground_truth.csv", write)


def _open_local_plate(folder: str):
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource, NotAPlateError

    try:
        return ImageXpressSource(folder)
    except NotAPlateError as exc:
        raise UserError(str(exc)) from None


def _load_pipeline(name_or_path: str):
    from openhcs_omero_lib.pipeline.loading import PipelineError, resolve_pipeline

    try:
        return resolve_pipeline(name_or_path)[0]
    except PipelineError as exc:
        raise UserError(str(exc)) from None


def _tuning(spec, assignments: list[str] | None) -> dict:
    """``--set key=value`` checked against the pipeline's parameters (a channel name is
    looked up on the plate later)."""
    from openhcs_omero_lib.pipeline.loading import PipelineError
    from openhcs_omero_lib.pipeline.params import check_values, parse_assignments

    try:
        return check_values(spec, parse_assignments(assignments or []))
    except PipelineError as exc:
        raise UserError(str(exc)) from None


def _tuned(spec, values: dict, layout):
    from openhcs_omero_lib.pipeline.loading import PipelineError
    from openhcs_omero_lib.pipeline.params import tune

    try:
        return tune(spec, values, [c.name for c in layout.channels] if layout is not None else None)
    except PipelineError as exc:
        raise UserError(str(exc)) from None


def _progress_bar(disable: bool):
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int, errors: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="site", disable=disable or None, file=sys.stderr)
        bar.set_postfix(errors=errors, refresh=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def _print_wells(results, limit: int = 30) -> None:
    import pandas as pd

    wells = results.wells
    cols = ["well", "timepoint", "sites", "sites_failed"] + \
        [c for c in wells.columns if c.endswith("_count")] + \
        [c for c in wells.columns if c.endswith("_ratio_ch2") or c.endswith("area_mean")][:2]
    if wells["timepoint"].nunique() == 1:
        cols.remove("timepoint")
    with pd.option_context("display.width", 120, "display.max_columns", 12, "display.precision", 2):
        shown = wells[cols]
        print(shown.head(limit).to_string(index=False))
        if len(shown) > limit:
            print(f"... {len(shown) - limit} more wells in wells.csv")


def _compare_ground_truth(folder: Path, results) -> None:
    from openhcs_omero_lib.plates.synthetic import GROUND_TRUTH, read_ground_truth

    if "nuclei_count" not in results.images or not (folder / GROUND_TRUTH).exists():
        return
    truth = read_ground_truth(folder)
    within = total = 0
    for row in results.images.itertuples():
        expected = truth.get((row.well, row.site, row.timepoint))
        if expected is None or row.error:
            continue
        total += 1
        within += abs(row.nuclei_count - expected) <= 0.05 * expected
    print(f"nuclei_count vs ground_truth.csv: {within}/{total} sites within 5%")


def cmd_run(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.engine import bind, run_pipeline
    from openhcs_omero_lib.results.tables import LocalFolderSink

    if args.omero_plate:
        if args.demo or args.plate:
            raise UserError("give a plate folder, --demo or --omero-plate (one of them)")
        return _run_omero(args)
    if args.run:
        raise UserError("--run chooses acquisition runs of an OMERO plate (--omero-plate); a folder has none")
    if args.demo == bool(args.plate):
        raise UserError("give a plate folder or --demo (not both)")
    folder = demo_plate() if args.demo else Path(args.plate)
    spec = _load_pipeline(args.pipeline)
    values = _tuning(spec, args.set)
    source = _open_local_plate(str(folder))
    try:
        spec = _tuned(spec, values, source.layout)
        bind(spec, source.layout)  # a channel the plate lacks fails here, before any output
    except (ValueError, UserError) as exc:
        source.close()
        raise UserError(str(exc)) from None
    try:
        measurement = _picture_measurement(args, bind(spec, source.layout))
    except UserError:
        source.close()
        raise
    out = Path(args.out) if args.out else Path("results") / f"{source.layout.name}_{spec.name}"
    print(source.layout.describe(), file=sys.stderr)
    print(f"pipeline {spec.name}, {args.workers} worker(s), {source.layout.n_units} units", file=sys.stderr)
    try:
        results = run_pipeline(source, spec, workers=args.workers, progress=_progress_bar(args.no_progress),
                               source_label=str(folder), outlines=args.qc)
        pictures = _local_pictures(args, results, source, bind(spec, source.layout), measurement)
    finally:
        source.close()
    written = LocalFolderSink(out, pictures).write(results)
    _print_wells(results)
    s = results.summary
    print(f"{s['timing']['units']} units in {s['timing']['seconds']:.1f} s, "
          f"{s['units_failed']} failed; wrote {', '.join(written)}")
    _compare_ground_truth(folder, results)
    return 1 if s["units_failed"] == s["timing"]["units"] else 0


def _picture_measurement(args: argparse.Namespace, bound) -> str:
    """The measurement the heat map and the QC montage show, checked before the run."""
    from openhcs_omero_lib.pictures.heatmap import check_measurement

    try:
        return check_measurement(bound, args.heatmap)
    except ValueError as exc:
        raise UserError(f"--heatmap: {exc}") from None


def _local_pictures(args: argparse.Namespace, results, source, bound, measurement: str) -> dict[str, bytes]:
    """``heatmap.png`` (unless --no-heatmap) and, with --qc, ``qc_montage.png``."""
    from openhcs_omero_lib.pictures.heatmap import drawable, plate_heatmap
    from openhcs_omero_lib.pictures.montage import qc_montage

    pictures = {}
    layout = source.layout
    if not args.no_heatmap and not drawable(layout.rows, layout.columns):
        print(f"no heatmap.png: a plate of {layout.rows}x{layout.columns} wells is larger than 1536-well plates",
              file=sys.stderr)
    elif not args.no_heatmap:
        pictures["heatmap.png"] = plate_heatmap(results.wells, layout.rows, layout.columns, plate=layout.name,
                                                pipeline=bound.name, measurement=measurement).png
    if args.qc:
        pictures["qc_montage.png"] = qc_montage(results, source.read_stack, bound, measurement).png
    return pictures


def _omero_connection(args: argparse.Namespace):
    import getpass

    from openhcs_omero_lib.omero.connection import ConnectionSettings, OmeroConnectionError, connect

    settings = ConnectionSettings.resolve(host=args.host, port=args.port, user=args.user,
                                          session_key=None, group=args.group, router=args.router)
    if settings.user and not settings.password and not settings.session_key and sys.stdin.isatty():
        settings = ConnectionSettings(**{**settings.__dict__, "password": getpass.getpass(
            f"password for {settings.user}@{settings.host}: ")})
    try:
        return connect(settings)
    except OmeroConnectionError as exc:
        raise UserError(str(exc)) from None


def _run_omero(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.execution.pixels import SourceNotReady
    from openhcs_omero_lib.omero.connection import disconnect
    from openhcs_omero_lib.omero.plate import OmeroInputError
    from openhcs_omero_lib.omero.run import prepare, run_on_plate
    from openhcs_omero_lib.omero.sink import ATTACH_CHOICES, OUTPUT_CHOICES
    from openhcs_omero_lib.results.tables import LocalFolderSink

    spec = _load_pipeline(args.pipeline)
    values = _tuning(spec, args.set)
    attach = tuple(a for a in args.attach.split(",") if a)
    outputs = tuple(o for o in args.outputs.split(",") if o)
    unknown = sorted(set(attach) - set(ATTACH_CHOICES) | set(outputs) - set(OUTPUT_CHOICES))
    if unknown:
        raise UserError(f"unknown --attach/--outputs choices: {', '.join(unknown)}")
    conn = _omero_connection(args)
    try:
        try:
            prepared = prepare(conn, "Plate", args.omero_plate, spec, runs=args.run, outputs=outputs, params=values)
        except OmeroInputError as exc:
            raise UserError(str(exc)) from None
        measurements = [_picture_measurement(args, bound) for _, bound in prepared]
        worst = 0
        for (plate, bound), measurement in zip(prepared, measurements):
            print(f"omero plate {plate.id}: {plate.layout.describe()}", file=sys.stderr)
            try:
                run = run_on_plate(conn, plate, bound, workers=args.workers, attach_to=attach, outputs=outputs,
                                   replace=not args.no_replace, progress=_progress_bar(args.no_progress),
                                   heatmap=not args.no_heatmap, heatmap_measurement=measurement,
                                   save_rois=args.save_rois, roi_cap=args.max_rois, pixel_access=args.pixel_access)
            except SourceNotReady as exc:
                print(f"{exc}; nothing attached to it", file=sys.stderr)
                worst = 1
                continue
            if args.out:
                pictures = {}
                if not args.no_heatmap and run.report.count() and not run.report.heatmap_note:
                    from openhcs_omero_lib.pictures.heatmap import plate_heatmap

                    pictures["heatmap.png"] = plate_heatmap(
                        run.results.wells, plate.layout.rows, plate.layout.columns, plate=plate.layout.name,
                        pipeline=bound.name, measurement=measurement).png
                LocalFolderSink(Path(args.out) / f"plate_{plate.id}", pictures).write(run.results)
            _print_wells(run.results)
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
        disconnect(conn)


def cmd_list_plates(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.omero.connection import disconnect
    from openhcs_omero_lib.omero.listing import list_plates

    conn = _omero_connection(args)
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


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "OMERO connection", "also from OMERO_HOST, OMERO_PORT, OMERO_USER, OMERO_PASSWORD, OMERO_SESSION_KEY, "
                            "OMERO_GROUP, or the current 'omero login' session")
    group.add_argument("--host", help="OMERO server")
    group.add_argument("--port", type=int, help="(default 4064)")
    group.add_argument("--user", help="user name (the password is asked for, or read from OMERO_PASSWORD)")
    group.add_argument("--group", help="group to work in")
    group.add_argument("--router", help=argparse.SUPPRESS)  # non-standard Ice.Default.Router


def cmd_make_plate(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.plates.synthetic import SyntheticPlateConfig, make_plate

    try:
        config = SyntheticPlateConfig(wells=args.wells, sites=args.sites, channels=args.channels,
                                      z_planes=args.z, timepoints=args.timepoints, size=args.size,
                                      seed=args.seed, touching=args.touching, name=args.name)
        folder = make_plate(args.folder, config)
    except (ValueError, FileExistsError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {folder} ({config.wells} wells, {config.sites} sites, {config.channels} channels, "
          f"{config.z_planes} z, {config.timepoints} t)")
    return 0


def cmd_pipelines(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.pipeline.loading import parse_spec, preset_names, preset_text
    from openhcs_omero_lib.pipeline.params import describe

    for name in preset_names():
        spec = parse_spec(preset_text(name), name)
        print(f"{name}\n    {spec.description}")
        tunable = ", ".join(f"{p.name}={'none' if p.default is None else p.default}"
                            for p in describe(spec).values())
        if tunable:
            print(f"    --set: {tunable}")
    return 0


def cmd_show_pipeline(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.pipeline.loading import PipelineError, preset_text

    try:
        print(preset_text(args.name), end="")
    except PipelineError as exc:
        raise UserError(str(exc)) from None
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.engine import bind

    spec = _load_pipeline(args.file)
    values = _tuning(spec, args.set)
    if args.plate:
        source = _open_local_plate(args.plate)
        try:
            bind(_tuned(spec, values, source.layout), source.layout)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        finally:
            source.close()
    elif values:  # a channel given by name waits for a plate
        from openhcs_omero_lib.pipeline.params import describe

        kinds = describe(spec)
        _tuned(spec, {k: v for k, v in values.items() if not (kinds[k].kind == "channel" and isinstance(v, str))},
               None)
    print(f"{args.file}: pipeline '{spec.name}' is valid ({len(spec.steps)} steps)")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.plates.virtual_backend import VirtualBackend

    source = _open_local_plate(args.plate)
    layout = source.layout
    print(layout.describe())
    backend = VirtualBackend(layout)
    print(f"{layout.n_planes} planes; virtual paths under {backend.root}, e.g.:")
    for i, path in enumerate(backend.list_files()):
        if i >= args.samples:
            break
        print(f"  {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"openhcs-omero: error: {self.prog.removeprefix('openhcs-omero ')}: {message}\n"
                     if self.prog != "openhcs-omero" else f"openhcs-omero: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from openhcs_omero_lib.execution.executor import available_cores

    parser = _Parser(prog="openhcs-omero", description=(
        "Run HCS image pipelines on ImageXpress plates (and, inside OMERO, on OMERO plates)."))
    parser.add_argument("--version", action="version", version=f"openhcs-omero {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline on a plate and write images.csv, wells.csv, results.json "
                                     "and a heat map")
    run.add_argument("plate", nargs="?", help="ImageXpress plate folder")
    run.add_argument("--demo", action="store_true", help="use the built-in synthetic demo plate")
    run.add_argument("--pipeline", default="nuclei_count", help="preset name or spec file (default: nuclei_count)")
    run.add_argument("--out", help="output folder (default: results/<plate>_<pipeline>)")
    run.add_argument("--workers", type=_positive, default=available_cores(),
                     help="worker processes (default: the cores available, %(default)s here)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--heatmap", metavar="MEASUREMENT",
                     help="the well measurement heatmap.png shows (default: the pipeline's first count)")
    run.add_argument("--no-heatmap", action="store_true", help="no heatmap.png")
    run.add_argument("--qc", action="store_true",
                     help="also write qc_montage.png: the fields of the wells with the lowest and highest "
                          "values, and failed fields, with the segmented objects outlined")
    run.add_argument("--omero-plate", type=_positive, action="append", metavar="ID",
                     help="run on an OMERO plate instead (repeatable); results are attached to it")
    run.add_argument("--run", type=_positive, action="append", metavar="ID",
                     help="with --omero-plate: measure only this acquisition run (PlateAcquisition ID; "
                          "repeatable); default: every run, each on its own")
    run.add_argument("--attach", default="plate,wells", help="with --omero-plate: plate,wells,images")
    run.add_argument("--outputs", default="csv,json,table,key_values",
                     help="with --omero-plate: any of csv,json,table,key_values")
    run.add_argument("--no-replace", action="store_true", help="keep earlier results of the same pipeline")
    run.add_argument("--save-rois", action="store_true",
                     help="with --omero-plate: save the measured objects as ROIs on each field's image")
    run.add_argument("--max-rois", type=_positive, default=2000, metavar="N",
                     help="with --save-rois: at most N ROIs per image (default: %(default)s)")
    run.add_argument("--pixel-access", choices=("auto", "server"), default="auto",
                     help="with --omero-plate: auto reads the plate's files from the server's managed repository "
                          "when it is on this machine (see the README) and they pass the checks; server always "
                          "reads through RawPixelsStore (default: %(default)s)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="tune a parameter the pipeline declares, e.g. nuclear_channel=2 or nuclear_channel=DAPI, "
                          "max_nucleus_size=400 (repeatable; 'openhcs-omero pipelines' lists them)")
    _connection_arguments(run)
    run.set_defaults(func=cmd_run)

    plates = sub.add_parser("list-plates", help="the OMERO plates you can run on")
    _connection_arguments(plates)
    plates.set_defaults(func=cmd_list_plates)

    make = sub.add_parser("make-plate", help="write a synthetic ImageXpress plate with ground truth")
    make.add_argument("folder")
    make.add_argument("--wells", type=_positive, default=24)
    make.add_argument("--sites", type=_positive, default=2)
    make.add_argument("--channels", type=_positive, default=2)
    make.add_argument("--z", type=_positive, default=1, help="z planes")
    make.add_argument("--timepoints", type=_positive, default=1)
    make.add_argument("--size", type=_positive, default=256, help="plane width and height in pixels")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--touching", action="store_true", help="place many nuclei against each other")
    make.add_argument("--name", default="SYNTH", help="plate name (file prefix)")
    make.set_defaults(func=cmd_make_plate)

    pipes = sub.add_parser("pipelines", help="list the built-in pipeline presets")
    pipes.set_defaults(func=cmd_pipelines)

    show = sub.add_parser("show-pipeline", help="print a preset's spec (a starting point for your own)")
    show.add_argument("name")
    show.set_defaults(func=cmd_show_pipeline)

    val = sub.add_parser("validate", help="check a pipeline spec file (and that a plate has its channels)")
    val.add_argument("file")
    val.add_argument("--plate", help="also check against this plate folder")
    val.add_argument("--set", action="append", metavar="KEY=VALUE", help="also check these parameter values")
    val.set_defaults(func=cmd_validate)

    desc = sub.add_parser("describe", help="a plate's layout and sample virtual file names")
    desc.add_argument("plate")
    desc.add_argument("--samples", type=int, default=6)
    desc.set_defaults(func=cmd_describe)

    from openhcs_omero_lib.cli.jobs import add_job_commands

    add_job_commands(sub, _connection_arguments, _positive)
    from openhcs_omero_lib.cli.server import add_server_command

    add_server_command(sub)

    from openhcs_omero_lib import bench

    bench_parser = sub.add_parser(
        "bench", help="benchmark against a naive OMERO script, OpenHCS and the compute-bound limit",
        description="Run the same pipeline on generated plates several ways and print ratios "
                    "(see the README's Benchmarks section).")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(func=bench.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not logging.getLogger().handlers:
        # omero-py logs every failed server call with its traceback; the command
        # reports what went wrong in one line of its own.
        logging.basicConfig(level=logging.ERROR, format="openhcs-omero: %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"openhcs-omero: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("openhcs-omero: interrupted; workers stopped, no results written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run the package's module, not this copy named __main__: the subcommand modules
    # import UserError from openhcs_omero_lib.cli.app, and it must be the class caught here.
    from openhcs_omero_lib.cli.app import main as package_main

    sys.exit(package_main())
