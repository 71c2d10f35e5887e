"""A local OMERO for testing: is it up, can we log in, start and stop it with Docker Compose.

:class:`OMEROInstanceManager` follows the instance manager OpenHCS documents (same
constructor and method names) with these differences:

- Credentials come from the arguments, then the ``OMERO_*`` environment variables, then
  the ``omero login`` session store (:meth:`ConnectionSettings.resolve`); there is no
  built-in password. Passwords and session keys are never logged, printed, kept in
  ``repr`` or in :attr:`~OMEROInstanceManager.last_error`.
- :meth:`~OMEROInstanceManager.start_via_docker_compose` runs the ``docker-compose.yml``
  shipped next to this module (PostgreSQL, OMERO.server with openhcs-omero and its scripts,
  OMERO.web) and needs ``OMERO_ROOT_PASSWORD`` in the environment.
- Used as a context manager it closes the connection it opened and never stops a
  server, not even one it started: a test server is expensive to start and is usually
  shared by several runs (``openhcs-omero server stop`` stops it).

Docker commands are built by the pure :func:`compose_command` and run through an
injectable runner (default :func:`subprocess.run`), so what would run is testable
without Docker.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from omero.gateway import BlitzGateway

from openhcs_omero_lib.omero.connection import ConnectionSettings, OmeroConnectionError, connect, disconnect

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
COMPOSE_FILE = HERE / "docker-compose.yml"
STARTUP_SCRIPT = HERE / "docker" / "55-openhcs-omero.sh"
DEFAULT_PROJECT = "openhcs-omero"

ROOT_PASSWORD_VAR = "OMERO_ROOT_PASSWORD"
DB_PASSWORD_VAR = "OMERO_DB_PASSWORD"
SOURCE_VAR = "OPENHCS_OMERO_SOURCE"
# The compose file refuses to load without these (``${VAR:?}``), even for ``down``.
REQUIRED_BY_COMPOSE_FILE = (ROOT_PASSWORD_VAR, DB_PASSWORD_VAR, SOURCE_VAR)

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class OmeroInstanceError(RuntimeError):
    """Docker, Docker Compose or the compose project is missing or failed; says which."""


# ---- pure helpers --------------------------------------------------------------------------------

def compose_command(action: str, *, compose_file: Path | str = COMPOSE_FILE, project_name: str = DEFAULT_PROJECT,
                    base: Sequence[str] = ("docker", "compose"), remove_volumes: bool = False) -> list[str]:
    """The argv of ``docker compose -f FILE -p NAME up -d`` (``action="up"``) or ``... down``."""
    argv = [*base, "-f", str(compose_file), "-p", project_name]
    if action == "up":
        return [*argv, "up", "-d"]
    if action == "down":
        return [*argv, "down", *(["--volumes"] if remove_volumes else [])]
    raise ValueError(f"unknown compose action {action!r} (expected 'up' or 'down')")


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=max(timeout, 0.01)):
            return True
    except OSError:
        return False


def default_source() -> Path | None:
    """The source checkout this package runs from (an editable install), if it is one."""
    root = HERE.parents[1]
    if (root / "pyproject.toml").is_file() and (root / "scripts" / "omero" / "openhcs").is_dir():
        return root
    return None


def compose_environment(base: dict[str, str], *, port: int, web_port: int, for_down: bool = False) -> dict[str, str]:
    """The environment ``docker compose`` runs with: ``base`` plus what the shipped file reads.

    ``OMERO_DB_PASSWORD`` defaults to ``OMERO_ROOT_PASSWORD`` and ``OPENHCS_OMERO_SOURCE`` to
    :func:`default_source`. ``down`` uses none of the values but compose still interpolates
    the whole file, so missing ones get a marker that is never used as a password.
    """
    env = {**base, "OPENHCS_OMERO_PORT": str(port), "OPENHCS_OMERO_WEB_PORT": str(web_port)}
    if env.get(ROOT_PASSWORD_VAR) and not env.get(DB_PASSWORD_VAR):
        env[DB_PASSWORD_VAR] = env[ROOT_PASSWORD_VAR]
    source = default_source()
    if not env.get(SOURCE_VAR) and source is not None:
        env[SOURCE_VAR] = str(source)
    if for_down:
        for var in REQUIRED_BY_COMPOSE_FILE:
            if not env.get(var):
                env[var] = "not-used-by-compose-down"
    return env


def _first_line(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def _is_refusal(exc: OmeroConnectionError) -> bool:
    """Whether the server answered and refused the credentials: retrying cannot help, and
    OMERO throttles repeated failed logins. ``connect`` raises from the omero error."""
    import Glacier2

    return isinstance(exc.__context__, Glacier2.PermissionDeniedException)


# ---- the manager ---------------------------------------------------------------------------------

class OMEROInstanceManager:
    """An OMERO server at ``host:port`` (OMERO.web at ``web_port``): probe, log in, start, stop.

    ``host`` and ``port`` are used as given (``openhcs-omero server`` reads ``OMERO_HOST`` and
    ``OMERO_PORT``); credentials are resolved as the module docstring says. ``router`` is a
    non-standard ``Ice.Default.Router`` (the test stand-in's); ``runner`` runs the Docker
    commands. A connection this manager opens is closed by :meth:`close` or on leaving a
    ``with`` block.
    """

    def __init__(self, host: str = "localhost", port: int = 4064, web_port: int = 4080,
                 username: str | None = None, password: str | None = None, *,
                 group: str | None = None, router: str | None = None, runner: Runner = subprocess.run):
        self.host = host
        self.port = int(port)
        self.web_port = int(web_port)
        self._settings = _resolve_credentials(host, self.port, username, password, group, router)
        self._runner = runner
        self._conn: BlitzGateway | None = None
        self.last_error: str | None = None
        """Why the last :meth:`connect` or :meth:`wait_for_ready` failed (no secrets)."""

    def __repr__(self) -> str:
        return (f"OMEROInstanceManager(host={self.host!r}, port={self.port}, web_port={self.web_port}, "
                f"username={self.username!r})")

    @property
    def username(self) -> str | None:
        return self._settings.user

    @property
    def group(self) -> str | None:
        return self._settings.group

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # ---- probes and logging in ----------------------------------------------------------------

    def is_running(self, timeout: float = 1.0) -> bool:
        """Whether the server port accepts TCP (not yet whether it accepts logins)."""
        return port_open(self.host, self.port, timeout)

    def web_running(self, timeout: float = 1.0) -> bool:
        """Whether the OMERO.web port accepts TCP."""
        return port_open(self.host, self.web_port, timeout)

    def connect(self, timeout: float = 30.0, *, interval: float = 1.0) -> bool:
        """Log in, retrying until ``timeout`` seconds have passed (at least one attempt).

        Returns False, with the reason in :attr:`last_error`, when it could not; it stops
        early when the server refuses the credentials or there are none.
        """
        if self._conn is not None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            outcome = self._attempt_login()
            if outcome is not None:
                return outcome
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(interval, remaining))

    def get_connection(self) -> BlitzGateway:
        """The logged-in gateway, logging in (once) if needed; raises
        :class:`OmeroConnectionError` saying why when it cannot."""
        if not self.connect(timeout=0):
            raise OmeroConnectionError(self.last_error or f"cannot log in to {self.host}:{self.port}")
        assert self._conn is not None
        return self._conn

    def wait_for_ready(self, timeout: float = 300.0, interval: float = 2.0) -> bool:
        """Wait until the port is open and then until a login succeeds: OMERO accepts TCP
        long before it accepts logins. False (see :attr:`last_error`) after ``timeout``.

        This is :meth:`connect` with a server's start-up time as the default timeout (each
        attempt probes the port before it tries to log in).
        """
        return self.connect(timeout=timeout, interval=interval)

    def close(self) -> None:
        """Close the connection this manager opened (a joined session is only left)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            disconnect(conn)
        except Exception as exc:  # a server that went away must not hide the error being handled
            log.warning("closing the OMERO connection failed: %s", type(exc).__name__)

    def __enter__(self) -> OMEROInstanceManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _attempt_login(self) -> bool | None:
        """True when logged in, False when retrying cannot help, None to try again."""
        settings = self._settings
        if not settings.session_key and not (settings.user and settings.password):
            self.last_error = ("no credentials: give a user and password (or OMERO_USER and OMERO_PASSWORD), "
                               "OMERO_SESSION_KEY, or log in with 'omero login'")
            return False
        if not self.is_running():
            self.last_error = f"nothing listening on {self.host}:{self.port}"
            return None
        try:
            self._conn = connect(settings)
        except OmeroConnectionError as exc:
            self.last_error = self._scrub(str(exc))
            return False if _is_refusal(exc) else None
        self.last_error = None
        log.info("logged in to %s:%s as %s", self.host, self.port, settings.user or "(joined session)")
        return True

    def _scrub(self, text: str) -> str:
        # OMERO names a refused session key in its message ("Password check failed for '<key>'").
        for secret in (self._settings.password, self._settings.session_key):
            if secret:
                text = text.replace(secret, "***")
        return text

    # ---- Docker Compose --------------------------------------------------------------------------

    def start_via_docker_compose(self, project_name: str = DEFAULT_PROJECT, wait: bool = True,
                                 timeout: float = 600.0) -> bool:
        """``docker compose -f <shipped file> -p NAME up -d``, then (``wait``) :meth:`wait_for_ready`.

        Needs ``OMERO_ROOT_PASSWORD`` (the new server's root password). Without other
        credentials the manager then logs in as ``root`` with it. Returns whether the server
        is ready (True right after ``up`` when not waiting); raises
        :class:`OmeroInstanceError` when Docker or Compose is missing or ``up`` fails.
        """
        root_password = os.environ.get(ROOT_PASSWORD_VAR)
        if not root_password:
            raise OmeroInstanceError(f"set {ROOT_PASSWORD_VAR} to the root password for the new OMERO server "
                                     "(there is no default)")
        env = compose_environment(dict(os.environ), port=self.port, web_port=self.web_port)
        if not env.get(SOURCE_VAR):
            raise OmeroInstanceError(f"set {SOURCE_VAR} to an openhcs-omero source checkout: the server container "
                                     "installs the package and its scripts from it")
        _check_startup_script(STARTUP_SCRIPT)
        self._compose("up", project_name, env)
        if not self._settings.user and not self._settings.session_key:
            self._settings = dataclasses.replace(self._settings, user="root", password=root_password)
        return self.wait_for_ready(timeout=timeout) if wait else True

    def stop_via_docker_compose(self, project_name: str = DEFAULT_PROJECT, remove_volumes: bool = False) -> None:
        """``docker compose ... down`` (``--volumes`` also deletes the database and data)."""
        self.close()
        env = compose_environment(dict(os.environ), port=self.port, web_port=self.web_port, for_down=True)
        self._compose("down", project_name, env, remove_volumes=remove_volumes)

    def _compose(self, action: str, project_name: str, env: dict[str, str], **options: Any) -> None:
        argv = compose_command(action, project_name=project_name, base=self._compose_base(), **options)
        log.info("running %s", " ".join(argv))
        done = self._runner(argv, env=env, check=False)
        if done.returncode != 0:
            raise OmeroInstanceError(f"'{' '.join(argv)}' failed (exit status {done.returncode}); "
                                     "see its output above")

    def _compose_base(self) -> list[str]:
        """``docker compose`` if the plugin works, else ``docker-compose``; and a reachable daemon."""
        docker = shutil.which("docker")
        legacy = shutil.which("docker-compose")
        if docker is None and legacy is None:
            raise OmeroInstanceError("Docker is not installed: neither 'docker' nor 'docker-compose' is on PATH")
        if docker is not None and self._probe(["docker", "compose", "version"]).returncode == 0:
            base = ["docker", "compose"]
        elif legacy is not None:
            base = ["docker-compose"]
        else:
            raise OmeroInstanceError("Docker Compose is not installed: 'docker compose' does not work and "
                                     "'docker-compose' is not on PATH")
        if docker is not None:
            info = self._probe(["docker", "info", "--format", "{{.ServerVersion}}"])
            if info.returncode != 0:
                why = _first_line(info.stderr) or f"'docker info' exited with {info.returncode}"
                raise OmeroInstanceError(f"the Docker daemon is not reachable (is it running, and may this user "
                                         f"use it?): {why}")
        return base

    def _probe(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return self._runner(argv, capture_output=True, text=True, check=False)
        except OSError as exc:  # found on PATH a moment ago, but not runnable
            return subprocess.CompletedProcess(argv, 127, "", str(exc))


def _resolve_credentials(host: str, port: int, username: str | None, password: str | None,
                         group: str | None, router: str | None) -> ConnectionSettings:
    """Arguments, then ``OMERO_*``, then the ``omero login`` store, for this host and port.

    ``ConnectionSettings.resolve`` lets a stored session replace the user and port; here an
    explicit password or user wins over a stored (or someone else's) session, and the
    manager's host and port are kept.
    """
    settings = ConnectionSettings.resolve(host=host, port=port, user=username, password=password,
                                          group=group, router=router)
    if password or (username and settings.user != username):
        settings = dataclasses.replace(settings, user=username or settings.user, session_key=None)
    return dataclasses.replace(settings, host=host, port=port)


def _check_startup_script(path: Path) -> None:
    """The official image runs only executable files from /startup/; an install that lost
    the mode bits (some wheel builds do) gets them back."""
    if not path.is_file():
        raise OmeroInstanceError(f"the container startup script is missing from the package: {path}")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | 0o555)
        except OSError:
            raise OmeroInstanceError(f"{path} must be executable for the OMERO container: chmod +x it") from None


__all__ = ["OMEROInstanceManager", "OmeroInstanceError", "compose_command", "compose_environment",
           "default_source", "port_open", "COMPOSE_FILE", "STARTUP_SCRIPT", "DEFAULT_PROJECT"]
