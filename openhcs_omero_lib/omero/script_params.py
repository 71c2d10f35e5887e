"""What every openhcs-omero script shares: the selection parameters, its credits,
and serving one call of :mod:`.script_support`. Imports only omero-py, so that the
server reading a script's parameters stays cheap."""

from __future__ import annotations

import importlib
import signal
import sys

import Ice
import omero
import omero.scripts as scripts
from omero.gateway import BlitzGateway
from omero.rtypes import rlist, rlong, rmap, robject, rstring

from openhcs_omero_lib import __version__

SCRIPT_INFO = dict(version=__version__, authors=["openhcs-omero developers"], institutions=["openhcs-omero"])


def selection_params(what: str) -> list:
    """``Data_Type`` and ``IDs``, which OMERO.web and OMERO.insight fill from the selection."""
    return [
        scripts.String("Data_Type", optional=False, grouping="1", description=f"{what} plates, or a screen's plates.",
                       values=[rstring("Plate"), rstring("Screen")], default="Plate"),
        scripts.List("IDs", optional=False, grouping="2", description="Plate or Screen IDs.").ofType(rlong(0)),
    ]


def preset_names() -> list[str]:
    """The built-in pipelines, for a script's ``Pipeline`` choice."""
    from openhcs_omero_lib.pipeline.presets import names

    return names()


def tuning_params(grouping: str) -> list:
    """The presets' tunable parameters as dialog parameters under ``grouping``."""
    from openhcs_omero_lib.omero.tuning_params import dialog_params

    return dialog_params(grouping)


def roi_cap_default() -> int:
    """Objects saved as ROIs per image unless the user says otherwise."""
    from openhcs_omero_lib.omero.rois import DEFAULT_CAP

    return DEFAULT_CAP


def serve(client, function: str, progress: bool = False) -> None:
    """Call ``script_support.<function>(conn, inputs)``, publish its outcome as the
    ``Message`` (and ``File_Annotation`` with its file, ``Attached_IDs``) outputs and as the job's
    message, and close the script's session. With ``progress`` the function also gets
    a publisher of its progress (``job=``), through which it learns of a cancel."""
    from openhcs_omero_lib.omero.job_progress import JobMessagePublisher
    from openhcs_omero_lib.redact import add_secret, configure_logging

    # The job's stderr is a file its user reads: no session key in omero-py's warnings.
    add_secret(client.getSessionId())
    configure_logging(own_process=True)
    publisher = JobMessagePublisher(client)
    # OMERO cancels a job with SIGTERM: finish the current step (never half an
    # attachment), then stop. While workers compute, the executor stops them at once.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: publisher.request_stop())
    try:
        support = importlib.import_module("openhcs_omero_lib.omero.script_support")
        conn = BlitzGateway(client_obj=client)
        extra = {"job": publisher} if progress else {}
        outcome = getattr(support, function)(conn, client.getInputs(unwrap=True), **extra)
        try:
            client.setOutput("Message", rstring(outcome.message))
            downloadable = _with_file(conn, outcome.file_annotation)
            if downloadable is not None:
                client.setOutput("File_Annotation", robject(downloadable))
            if outcome.attached:
                client.setOutput("Attached_IDs", rmap({kind: rlist([rlong(i) for i in ids])
                                                       for kind, ids in outcome.attached.items()}))
        except (omero.ServerError, Ice.Exception) as exc:
            # The session is gone (removed, timed out): the job's stderr, which the
            # Processor keeps with its own session, is the one place left to say it.
            print(f"openhcs-omero: {outcome.message} (the outputs could not be set: "
                  f"{type(exc).__name__})", file=sys.stderr)
            publisher.request_stop()
            raise SystemExit(1) from None
        publisher.finish(outcome.outcome, outcome.message)
    finally:
        if publisher.active:  # the outcome above was never reached
            publisher.finish("failed", "the script stopped unexpectedly (see its stderr)")
        signal.signal(signal.SIGTERM, previous)
        client.closeSession()


def _with_file(conn, annotation):
    """``annotation`` read back with its OriginalFile loaded (name, mimetype, size), or
    None. IUpdate answers a save with unloaded references to the objects the saved
    graph only pointed at (omero-server ``MergeEventListener`` loads them as proxies,
    ``ProxyCleanupFilter`` sends proxies as unloaded objects), so a saved annotation
    knows its file by ID alone; OMERO.web's Activities panel reads the output's
    ``file.mimetype`` and ``file.name`` without a guard (omero-web
    ``webclient/views.py``, ``activities``), and a script's results can be read only
    once: an unloaded file there loses the run's ``Message`` too."""
    if annotation is None:
        return None
    from openhcs_omero_lib.omero import queries as Q
    from openhcs_omero_lib.omero.plate import all_groups, query_params

    try:
        found = conn.getQueryService().findAllByQuery(
            Q.FILE_ANNOTATION, query_params(id=annotation.getId().getValue()), all_groups(conn))
    except Exception as exc:  # the Message matters more than the download
        print(f"openhcs-omero: no File_Annotation output: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return None
    return found[0] if found else None
