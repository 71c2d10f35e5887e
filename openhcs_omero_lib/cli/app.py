"""The ``openhcs-omero`` command: its parser and ``main``; the commands live in the modules
of their group (:mod:`.local`, :mod:`.omero_plates`, :mod:`.jobs`, :mod:`.server`)."""

from __future__ import annotations

import argparse
import os
import sys

from openhcs_omero_lib import __version__
from openhcs_omero_lib.cli.common import MAX_WORKERS, RunFailed, UserError, connection_arguments, positive, workers
from openhcs_omero_lib.cli.jobs import add_job_commands
from openhcs_omero_lib.cli.local import (
    cmd_describe,
    cmd_make_plate,
    cmd_pipelines,
    cmd_run,
    cmd_show_pipeline,
    cmd_validate,
)
from openhcs_omero_lib.cli.omero_plates import cmd_list_plates
from openhcs_omero_lib.cli.server import add_server_command


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"openhcs-omero: error: {self.prog.removeprefix('openhcs-omero ')}: {message}\n"
                     if self.prog != "openhcs-omero" else f"openhcs-omero: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from openhcs_omero_lib.execution.cores import available_cores

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
    run.add_argument("--workers", type=workers, default=min(available_cores(), MAX_WORKERS),
                     help="worker processes (default: the cores available, %(default)s here)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--dask", metavar="SCHEDULER",
                     help="compute on a Dask cluster instead of --workers processes: a scheduler's address "
                          "(tls://host:8786) or local:N (N worker processes on this machine); default: the "
                          "settings file's dask section, if any (see the README)")
    run.add_argument("--heatmap", metavar="MEASUREMENT",
                     help="the well measurement heatmap.png shows (default: the pipeline's first count)")
    run.add_argument("--no-heatmap", action="store_true", help="no heatmap.png")
    run.add_argument("--allow-bad-files", action="store_true",
                     help="run even when image files are empty, truncated, unreadable or of another size: "
                          "their fields become error rows (names, the HTD and missing files are still checked)")
    run.add_argument("--qc", action="store_true",
                     help="also write qc_montage.png: the fields of the wells with the lowest and highest "
                          "values, and failed fields, with the segmented objects outlined")
    run.add_argument("--omero-plate", type=positive, action="append", metavar="ID",
                     help="run on an OMERO plate instead (repeatable); results are attached to it")
    run.add_argument("--run", type=positive, action="append", metavar="ID",
                     help="with --omero-plate: measure only this acquisition run (PlateAcquisition ID; "
                          "repeatable); default: every run, each on its own")
    run.add_argument("--attach", default="plate,wells", help="with --omero-plate: plate,wells,images")
    run.add_argument("--outputs", default="csv,json,table,key_values",
                     help="with --omero-plate: any of csv,json,table,key_values")
    run.add_argument("--no-replace", action="store_true", help="keep earlier results of the same pipeline")
    run.add_argument("--save-rois", action="store_true",
                     help="with --omero-plate: save the measured objects as ROIs on each field's image")
    run.add_argument("--max-rois", type=positive, default=2000, metavar="N",
                     help="with --save-rois: at most N ROIs per image (default: %(default)s)")
    run.add_argument("--pixel-access", choices=("auto", "server"), default="auto",
                     help="with --omero-plate: auto reads the plate's files from the server's managed repository "
                          "when it is on this machine (see the README) and they pass the checks; server always "
                          "reads through RawPixelsStore (default: %(default)s)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="tune a parameter the pipeline declares, e.g. nuclear_channel=2 or nuclear_channel=DAPI, "
                          "max_nucleus_size=400 (repeatable; 'openhcs-omero pipelines' lists them)")
    connection_arguments(run)
    run.set_defaults(func=cmd_run)

    plates = sub.add_parser("list-plates", help="the OMERO plates you can run on")
    connection_arguments(plates)
    plates.set_defaults(func=cmd_list_plates)

    make = sub.add_parser("make-plate", help="write a synthetic ImageXpress plate with ground truth")
    make.add_argument("folder")
    make.add_argument("--wells", type=positive, default=24)
    make.add_argument("--sites", type=positive, default=2)
    make.add_argument("--channels", type=positive, default=2)
    make.add_argument("--z", type=positive, default=1, help="z planes")
    make.add_argument("--timepoints", type=positive, default=1)
    make.add_argument("--size", type=positive, default=256, help="plane width and height in pixels")
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

    add_job_commands(sub, connection_arguments, positive)
    add_server_command(sub)
    return parser


def _one_line(exc: Exception) -> str:
    """A message on one line whatever names it quotes (an OMERO plate may be named
    with a line break)."""
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    """Run the command; ``argv`` defaults to the command line. Run from the command line
    (no ``argv``), the process then ends at once (see :func:`_end_now`)."""
    code = _main(argv)
    if argv is None:
        _end_now(code)
    return code


def _end_now(code: int) -> None:
    """End the process without Python's teardown of every module (numpy, scipy,
    pandas, pydantic, omero: a tenth of a second or more that nobody waits for). The
    atexit handlers (omero-py's temporary files, logging) still run and the output is
    flushed; while another thread still runs, which a normal exit would wait for, the
    exit is a normal one."""
    import atexit
    import os
    import threading

    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _main(argv: list[str] | None) -> int:
    from openhcs_omero_lib.redact import add_secret, configure_logging

    # omero-py logs every failed server call with its traceback and the session key;
    # the command reports what went wrong in one line of its own.
    configure_logging()
    for variable in ("OMERO_PASSWORD", "OMERO_SESSION_KEY"):
        add_secret(os.environ.get(variable))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"openhcs-omero: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"openhcs-omero: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("openhcs-omero: interrupted; workers stopped, no results written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
