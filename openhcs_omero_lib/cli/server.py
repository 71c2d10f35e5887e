"""``openhcs-omero server status|start|stop``: a local OMERO for testing (Docker Compose).

Nothing here imports ``omero`` at import time (the CLI must start without it); the
instance manager is imported when a subcommand runs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

DEFAULT_TIMEOUT = 600.0


def add_server_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``server`` with ``status``, ``start`` and ``stop`` to a CLI's subparsers."""
    server = subparsers.add_parser(
        "server", help="check, start or stop a local OMERO for testing (Docker Compose)",
        description="A local OMERO.server, PostgreSQL and OMERO.web with openhcs-omero installed, "
                    "run with Docker Compose. 'start' needs OMERO_ROOT_PASSWORD.")
    actions = server.add_subparsers(dest="server_command", required=True)

    status = actions.add_parser("status", help="is the server port open, the web port open, can we log in "
                                               "(exit status 0 only if we can)")
    _server_arguments(status)
    status.set_defaults(func=cmd_server_status)

    start = actions.add_parser("start", help="start the Docker Compose project and wait until logins work")
    _server_arguments(start)
    _project_argument(start)
    start.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                       help="seconds to wait for the first login (default %(default)g; "
                            "the first start pulls images and installs packages)")
    start.add_argument("--no-wait", action="store_true", help="return once the containers are started")
    start.set_defaults(func=cmd_server_start)

    stop = actions.add_parser("stop", help="stop and remove the Docker Compose project's containers")
    _server_arguments(stop)
    _project_argument(stop)
    stop.add_argument("--remove-volumes", action="store_true",
                      help="also delete the database and the OMERO data (the next start is a fresh server)")
    stop.set_defaults(func=cmd_server_stop)
    return server


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "OMERO server", "also from OMERO_HOST, OMERO_PORT, OMERO_USER, OMERO_PASSWORD, OMERO_SESSION_KEY, "
                        "OMERO_GROUP, or the current 'omero login' session")
    group.add_argument("--host", help="(default: OMERO_HOST, else localhost)")
    group.add_argument("--port", type=int, help="server port (default: OMERO_PORT, else 4064)")
    group.add_argument("--web-port", type=int, default=4080, help="OMERO.web port (default %(default)s)")
    group.add_argument("--user", help="user name (the password is read from OMERO_PASSWORD)")
    group.add_argument("--group", help="group to log in to")
    group.add_argument("--router", help=argparse.SUPPRESS)  # non-standard Ice.Default.Router


def _project_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", default="openhcs-omero", help="Docker Compose project name (default %(default)s)")


def _manager(args: argparse.Namespace):
    from openhcs_omero_lib.omero.instance import OMEROInstanceManager

    host = args.host or os.environ.get("OMERO_HOST") or "localhost"
    port = args.port or int(os.environ.get("OMERO_PORT") or 4064)
    return OMEROInstanceManager(host, port, args.web_port, args.user, group=args.group, router=args.router)


def _user_error(message: object) -> Exception:
    from openhcs_omero_lib.cli.common import UserError

    return UserError(str(message))


def cmd_server_status(args: argparse.Namespace) -> int:
    """One line each: server port, web port, login. Exit status 0 only if the login works."""
    with _manager(args) as manager:
        print(f"server  {manager.host}:{manager.port}  {'open' if manager.is_running() else 'closed'}")
        print(f"web     {manager.host}:{manager.web_port}  {'open' if manager.web_running() else 'closed'}")
        who = manager.username or "(no user)"
        if manager.connect(timeout=0):
            print(f"login   {who}  ok")
            return 0
        print(f"login   {who}  failed: {manager.last_error}")
        return 1


def cmd_server_start(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.omero.instance import COMPOSE_FILE, OmeroInstanceError

    with _manager(args) as manager:
        try:
            manager.start_via_docker_compose(args.project, wait=False)
        except OmeroInstanceError as exc:
            raise _user_error(exc) from None
        print(f"started Docker Compose project {args.project}: OMERO.server on {manager.host}:{manager.port}, "
              f"OMERO.web on {manager.host}:{manager.web_port}")
        if args.no_wait:
            return 0
        print(f"waiting up to {args.timeout:g} s for logins as {manager.username} "
              "(the first start pulls images and installs packages)", flush=True)
        if not manager.wait_for_ready(timeout=args.timeout):
            raise _user_error(f"OMERO is not ready after {args.timeout:g} s: {manager.last_error} "
                              f"(see: docker compose -f {COMPOSE_FILE} -p {args.project} logs omero-server)")
        print(f"ready: logged in to {manager.host}:{manager.port} as {manager.username}")
        return 0


def cmd_server_stop(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.omero.instance import OmeroInstanceError

    with _manager(args) as manager:
        try:
            manager.stop_via_docker_compose(args.project, remove_volumes=args.remove_volumes)
        except OmeroInstanceError as exc:
            raise _user_error(exc) from None
    print(f"stopped Docker Compose project {args.project}"
          + ("; its database and data volumes are deleted" if args.remove_volumes else "; its volumes are kept"))
    return 0
