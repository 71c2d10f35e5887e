"""What the command groups share: the user-error type, argument types, the OMERO connection
from arguments, loading and tuning a pipeline, progress and printing. Imports no command module."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


class RunFailed(Exception):
    """A run that could not finish (its results could not be stored): printed as one
    line, exit status 1."""


MAX_WORKERS = 64
"""As the script's Workers parameter: more processes than this are a mistake."""


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def workers(text: str) -> int:
    value = positive(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"at most {MAX_WORKERS}, got {value}")
    return value


def check_output(folder: Path) -> None:
    """Refuse an output folder that cannot be written, before anything is computed."""
    from openhcs_omero_lib.results.sinks import LocalFolderSink

    try:
        LocalFolderSink(folder).check()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(folder) else ""
        raise UserError(f"cannot write results to {folder}: {exc.strerror or exc}{where}") from None


def open_local_plate(folder: str, check: bool = False, tiffs: bool = True):
    """The plate in ``folder``; with ``check``, every file checked
    (:func:`check_local_plate`)."""
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource, NotAPlateError

    try:
        source = ImageXpressSource(folder)
    except NotAPlateError as exc:
        raise UserError(str(exc)) from None
    if check:
        try:
            check_local_plate(source, tiffs)
        except UserError:
            source.close()
            raise
    return source


def check_local_plate(source, tiffs: bool = True, channels=None) -> None:
    """Every file of an opened local plate present and readable
    (:mod:`.imagexpress_check`), their contents too unless not ``tiffs`` (only
    ``channels``', if given)."""
    from openhcs_omero_lib.plates.imagexpress import NotAPlateError
    from openhcs_omero_lib.plates.imagexpress_check import check_plate_folder

    try:
        check_plate_folder(source, tiffs=tiffs, channels=channels)
    except NotAPlateError as exc:
        raise UserError(str(exc)) from None


def load_pipeline(name_or_path: str):
    from openhcs_omero_lib.pipeline.loading import PipelineError, resolve_pipeline

    try:
        return resolve_pipeline(name_or_path)[0]
    except PipelineError as exc:
        raise UserError(str(exc)) from None


def tuning(spec, assignments: list[str] | None) -> dict:
    """``--set key=value`` checked against the pipeline's parameters (a channel name is
    looked up on the plate later)."""
    from openhcs_omero_lib.pipeline.loading import PipelineError
    from openhcs_omero_lib.pipeline.params import check_values, parse_assignments

    try:
        return check_values(spec, parse_assignments(assignments or []))
    except PipelineError as exc:
        raise UserError(str(exc)) from None


def tuned(spec, values: dict, layout):
    from openhcs_omero_lib.pipeline.loading import PipelineError
    from openhcs_omero_lib.pipeline.params import tune

    try:
        return tune(spec, values, [c.name for c in layout.channels] if layout is not None else None)
    except PipelineError as exc:
        raise UserError(str(exc)) from None


def progress_bar(disable: bool):
    if disable or not sys.stderr.isatty():
        # What tqdm would do (it hides itself off a terminal), without importing it.
        return None
    from tqdm import tqdm

    # Without its monitor thread: worker processes of a local plate may then be forked.
    tqdm.monitor_interval = 0
    bar = None

    def update(done: int, total: int, errors: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="site", file=sys.stderr)
        bar.set_postfix(errors=errors, refresh=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def print_wells(results, limit: int = 30) -> None:
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


def omero_connection(args: argparse.Namespace):
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


def connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "OMERO connection", "also from OMERO_HOST, OMERO_PORT, OMERO_USER, OMERO_PASSWORD, OMERO_SESSION_KEY, "
                            "OMERO_GROUP, or the current 'omero login' session")
    group.add_argument("--host", help="OMERO server")
    group.add_argument("--port", type=int, help="(default 4064)")
    group.add_argument("--user", help="user name (the password is asked for, or read from OMERO_PASSWORD)")
    group.add_argument("--group", help="group to work in")
    group.add_argument("--router", help=argparse.SUPPRESS)  # non-standard Ice.Default.Router


def open_backend(args: argparse.Namespace):
    """Who computes: ``--dask``, else the server's settings file, else ``--workers``
    processes (see the README's On a Dask cluster)."""
    from openhcs_omero_lib.execution.backend import open_backend as open_configured
    from openhcs_omero_lib.execution.settings import ClusterError, SettingsError

    try:
        return open_configured(args.workers, args.dask)
    except (SettingsError, ClusterError) as exc:
        raise UserError(str(exc)) from None


def picture_measurement(args: argparse.Namespace, bound) -> str:
    """The measurement the heat map and the QC montage show, checked before the run."""
    from openhcs_omero_lib.pictures.heatmap import check_measurement

    try:
        return check_measurement(bound, args.heatmap)
    except ValueError as exc:
        raise UserError(f"--heatmap: {exc}") from None
