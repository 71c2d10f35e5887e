"""``openhcs-omero launch | status | cancel``: a run on the server, from a workstation.

Exit codes: 0 the run finished, 1 it failed, 2 bad input (nothing started),
3 it was cancelled (``cancel`` exits 0 once the job has stopped), 4 still running
(``status``), 130 interrupted with Ctrl-C (the job is cancelled on the server).
"""

from __future__ import annotations

import argparse
import sys
import time

EXIT = {"finished": 0, "failed": 1, "cancelled": 3}
RUNNING = 4


def add_job_commands(sub, connection_arguments, positive) -> None:
    launch = sub.add_parser("launch", help="run a pipeline on OMERO plates inside the server, with live progress")
    launch.add_argument("--plate", type=positive, action="append", required=True, metavar="ID",
                        help="OMERO plate ID (repeatable)")
    launch.add_argument("--pipeline", default="nuclei_count", help="preset name or spec file (default: nuclei_count)")
    launch.add_argument("--workers", type=positive, help="worker processes on the server (default: the script's)")
    launch.add_argument("--attach", default="plate,wells", help="plate | plate,wells | plate,wells,images")
    launch.add_argument("--outputs", help="any of csv,json,table,key_values (default: all)")
    launch.add_argument("--run", type=positive, action="append", metavar="ID",
                        help="measure only this acquisition run (PlateAcquisition ID; repeatable); "
                             "default: every run, each on its own")
    launch.add_argument("--no-replace", action="store_true", help="keep earlier results of the same pipeline")
    launch.add_argument("--pixel-access", choices=("auto", "server"),
                        help="how the script reads pixels: auto (the plate's files in the managed repository when "
                             "they pass the checks) or server (RawPixelsStore); default: the script's (auto)")
    launch.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="tune a parameter of the pipeline, e.g. nuclear_channel=2 (repeatable)")
    pictures = launch.add_mutually_exclusive_group()
    pictures.add_argument("--heatmap", metavar="MEASUREMENT",
                          help="the well measurement the plate's heat map shows (default: the pipeline's first count)")
    pictures.add_argument("--no-heatmap", action="store_true", help="attach no heat map")
    launch.add_argument("--save-rois", action="store_true",
                        help="save the measured objects as ROIs on each field's image")
    launch.add_argument("--max-rois", type=positive, metavar="N",
                        help="with --save-rois: at most N ROIs per image (default: the script's)")
    launch.add_argument("--no-wait", action="store_true", help="start the job, print its ID and return")
    launch.add_argument("--no-progress", action="store_true", help="no progress bar")
    launch.add_argument("--script", help="the script's server path or ID (default: /omero/openhcs/Run_HCS_Pipeline.py)")
    launch.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    connection_arguments(launch)
    launch.set_defaults(func=cmd_launch)

    status = sub.add_parser("status", help="the state of a job started with launch")
    status.add_argument("job", type=positive)
    connection_arguments(status)
    status.set_defaults(func=cmd_status)

    cancel = sub.add_parser("cancel", help="cancel a job started with launch")
    cancel.add_argument("job", type=positive)
    cancel.add_argument("--timeout", type=float, default=60, help="seconds to wait for it to stop (default 60)")
    connection_arguments(cancel)
    cancel.set_defaults(func=cmd_cancel)


def _user_error(exc: Exception):
    from openhcs_omero_lib.cli.common import UserError

    return UserError(str(exc))


def cmd_launch(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.cli.common import omero_connection
    from openhcs_omero_lib.omero.connection import disconnect
    from openhcs_omero_lib.omero.jobs import JobError, detach, find_script, pipeline_inputs, run_inputs, start_job

    attach = tuple(a for a in args.attach.split(",") if a)
    if args.max_rois is not None and not args.save_rois:
        raise _user_error(ValueError("--max-rois needs --save-rois"))
    outputs = tuple(o for o in args.outputs.split(",") if o) if args.outputs else None
    tuning = _tuning_inputs(args)
    conn = omero_connection(args)
    try:
        try:
            inputs = run_inputs(args.plate, workers=args.workers, attach=attach, outputs=outputs,
                                replace=not args.no_replace, runs=args.run, pixel_access=args.pixel_access,
                                heatmap=not args.no_heatmap, heatmap_measurement=args.heatmap,
                                save_rois=args.save_rois, max_rois=args.max_rois)
            script_id = find_script(conn, args.script)
            inputs.update(pipeline_inputs(conn, args.pipeline))
            inputs.update(tuning)
            job_id, proc = start_job(conn, script_id, inputs)
        except JobError as exc:
            raise _user_error(exc) from None
        print(f"job {job_id} started: {args.pipeline} on plate{'s' if len(args.plate) > 1 else ''} "
              f"{', '.join(map(str, args.plate))}", file=sys.stderr)
        if args.no_wait:
            try:
                detach(proc)  # or it stops when this command's session ends
            except JobError as exc:
                print(f"job {job_id}: {exc}", file=sys.stderr)
                return 1
            print(job_id)
            print(f"follow it with: openhcs-omero status {job_id}; stop it with: openhcs-omero cancel {job_id}",
                  file=sys.stderr)
            return 0
        return _follow(conn, job_id, proc, args)
    finally:
        disconnect(conn)


def _tuning_inputs(args: argparse.Namespace) -> dict:
    """``--set`` as the script's dialog parameters, checked against the pipeline when
    it is known here (a preset or a file) before anything starts."""
    from openhcs_omero_lib.omero.tuning_params import inputs_from_values
    from openhcs_omero_lib.pipeline.loading import PipelineError, resolve_pipeline
    from openhcs_omero_lib.pipeline.params import check_values, parse_assignments

    try:
        values = parse_assignments(args.set or [])
        if values:
            check_values(resolve_pipeline(args.pipeline)[0], values)
        return inputs_from_values(values)
    except PipelineError as exc:
        raise _user_error(exc) from None


def _follow(conn, job_id: int, proc, args) -> int:
    from openhcs_omero_lib.omero.jobs import JobError, JobWatch, close_job, results_of

    try:
        with JobWatch(conn, job_id) as watch, _ProgressView(args.no_progress) as view:
            try:
                while proc.poll() is None:
                    view.show(watch.state())
                    time.sleep(args.interval)
            except KeyboardInterrupt:
                view.close()
                print(f"cancelling job {job_id} on the server...", file=sys.stderr)
                proc.cancel()
                deadline = time.monotonic() + 30
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                state = watch.state()
                print(f"job {job_id}: {state.outcome or state.status}: {state.summary}", file=sys.stderr)
                return 130
            state = watch.state()
            view.show(state)
        try:
            results = results_of(proc)
        except JobError as exc:
            print(f"job {job_id}: {exc}", file=sys.stderr)
            results = {}
    finally:
        close_job(proc)
    if state.outcome is None:
        # The process has ended, yet neither the script nor the server said how: the
        # job's session ended under it (omero.scripts.timeout, see the README).
        print(f"job {job_id} ended without an outcome (status {state.status}); its last message: "
              f"{state.message or '(none)'}")
        return EXIT["failed"]
    print(results.get("Message") or state.summary or f"the job ended: {state.status}")
    for kind, ids in sorted((results.get("Attached_IDs") or {}).items()):
        print(f"attached {kind}: {', '.join(map(str, ids))}")
    if results.get("File_Annotation"):
        print(f"per-well CSV: FileAnnotation {results['File_Annotation']}")
    if state.outcome != "finished":
        _print_stderr_hint(conn, results)
    return EXIT.get(state.outcome, 1)


def _print_stderr_hint(conn, results) -> None:
    for name in ("stderr", "stdout"):
        if results.get(name):
            print(f"the script's {name} is OriginalFile {results[name]} "
                  f"(omero download OriginalFile:{results[name]} -)", file=sys.stderr)


class _ProgressView:
    """A progress bar over wells, fed from the job's published progress."""

    def __init__(self, disabled: bool):
        self.disabled = disabled
        self.bar = None

    def show(self, state) -> None:
        progress = state.progress
        if self.disabled or progress is None:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=progress.wells_total, unit="well", file=sys.stderr, dynamic_ncols=True)
        self.bar.update(progress.wells_done - self.bar.n)
        remaining = progress.remaining
        self.bar.set_postfix_str(
            f"fields {progress.fields_done}/{progress.fields_total}, errors {progress.errors}, "
            f"plate {progress.plate}/{progress.plates}"
            + (f", ~{remaining:.0f} s left" if remaining is not None else ""), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> _ProgressView:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _describe(state) -> str:
    progress = state.progress
    if progress is not None:
        remaining = progress.remaining
        left = f", about {remaining:.0f} s left" if remaining is not None else ""
        return (f"job {state.id}: running: wells {progress.wells_done}/{progress.wells_total}, fields "
                f"{progress.fields_done}/{progress.fields_total}, errors {progress.errors}, "
                f"plate {progress.plate}/{progress.plates}, {progress.elapsed:.0f} s elapsed{left}")
    if state.outcome:
        return f"job {state.id}: {state.outcome}: {state.summary}"
    return f"job {state.id}: {state.status.lower()}" + (f": {state.message}" if state.message else "")


def _on_job(args: argparse.Namespace, act):
    """``act(watch)`` for the job ``args.job``, over a connection opened for it."""
    from openhcs_omero_lib.cli.common import omero_connection
    from openhcs_omero_lib.omero.connection import disconnect
    from openhcs_omero_lib.omero.jobs import JobError, JobWatch

    conn = omero_connection(args)
    try:
        with JobWatch(conn, args.job) as watch:
            return act(watch)
    except JobError as exc:
        raise _user_error(exc) from None
    finally:
        disconnect(conn)


def cmd_status(args: argparse.Namespace) -> int:
    state = _on_job(args, lambda watch: watch.state())
    print(_describe(state))
    return EXIT[state.outcome] if state.outcome else RUNNING


def cmd_cancel(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.omero.jobs import wait_for_outcome

    def cancel(watch):
        state = watch.state()
        if state.outcome:
            return state, False
        watch.cancel()
        print(f"job {args.job}: cancel requested; waiting for it to stop", file=sys.stderr)
        return wait_for_outcome(watch, args.timeout), True

    state, requested = _on_job(args, cancel)
    if not requested:
        print(f"job {args.job} has already ended: {state.outcome}: {state.summary}")
    elif state.outcome is None:
        print(f"job {args.job} is marked cancelled but has not confirmed it stopped within {args.timeout:.0f} s")
        return 1
    else:
        print(f"job {args.job}: {state.outcome}: {state.summary}")
    return 0
