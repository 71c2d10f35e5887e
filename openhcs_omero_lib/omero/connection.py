"""Connections to OMERO: from a script's client, from settings, or by joining a session.

Settings come from arguments first, then the environment (``OMERO_HOST``,
``OMERO_PORT``, ``OMERO_USER``, ``OMERO_PASSWORD``, ``OMERO_SESSION_KEY``,
``OMERO_GROUP``, and ``OMERO_ROUTER`` for a non-standard ``Ice.Default.Router``), then the
``omero login`` session store. Passwords and session keys are held in fields kept out of
``repr`` and are never logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import omero
import omero.clients
from omero.gateway import BlitzGateway

from openhcs_omero_lib.omero.address import ServerAddress
from openhcs_omero_lib.redact import add_secret

log = logging.getLogger(__name__)


class OmeroConnectionError(RuntimeError):
    """Could not connect or log in; the message says why, without secrets."""


@dataclass(frozen=True)
class ConnectionSettings:
    host: str | None = None
    port: int = 4064
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    session_key: str | None = field(default=None, repr=False)
    group: str | None = None
    router: str | None = None

    @classmethod
    def resolve(cls, **given) -> ConnectionSettings:
        """Arguments, then environment variables, then the ``omero login`` store."""
        env = os.environ
        values = {
            "host": given.get("host") or env.get("OMERO_HOST"),
            "port": int(given.get("port") or env.get("OMERO_PORT") or 4064),
            "user": given.get("user") or env.get("OMERO_USER"),
            "password": given.get("password") or env.get("OMERO_PASSWORD"),
            "session_key": given.get("session_key") or env.get("OMERO_SESSION_KEY"),
            "group": given.get("group") or env.get("OMERO_GROUP"),
            "router": given.get("router") or env.get("OMERO_ROUTER"),
        }
        if not values["password"] and not values["session_key"]:
            stored = _login_store_session(values["host"])
            if stored:
                values.update(stored)
        return cls(**values)

    @property
    def address(self) -> ServerAddress:
        if not self.host:
            raise OmeroConnectionError("no OMERO server given: use --host, OMERO_HOST or 'omero login'")
        return ServerAddress(self.host, self.port, self.router)


def _login_store_session(host: str | None) -> dict | None:
    """The current session of ``omero login``, if it is for ``host`` (or any host)."""
    try:
        from omero.util.sessions import SessionsStore

        current = SessionsStore().get_current()
    except Exception:  # no store, unreadable store: there is simply no session
        return None
    stored_host, name, uuid, port = current
    if not uuid or (host and stored_host != host):
        return None
    return {"host": stored_host, "user": name, "session_key": uuid, "port": int(port or 4064)}


def connect(settings: ConnectionSettings) -> BlitzGateway:
    """A logged-in gateway, by session key if given, else by user and password."""
    add_secret(settings.password)
    add_secret(settings.session_key)
    client = settings.address.new_client()
    try:
        if settings.session_key:
            client.joinSession(settings.session_key)
        elif settings.user and settings.password:
            client.createSession(settings.user, settings.password)
        else:
            raise OmeroConnectionError("no credentials: give a user and password, a session key, "
                                       "or log in with 'omero login'")
    except OmeroConnectionError:
        client.__del__()
        raise
    except Exception as exc:
        client.__del__()
        raise OmeroConnectionError(f"cannot log in to {settings.host}:{settings.port}: "
                                   f"{_without_secrets(_reason(exc), settings)}") from None
    add_secret(client.getSessionId())
    conn = BlitzGateway(client_obj=client)
    conn._openhcs_joined = bool(settings.session_key)
    if settings.group:
        try:
            conn.SERVICE_OPTS.setOmeroGroup(_group_id(conn, settings.group))
        except OmeroConnectionError:
            disconnect(conn)
            raise
    return conn


def _group_id(conn: BlitzGateway, group: str | int) -> int:
    """A group given by ID or by name."""
    if isinstance(group, int) or str(group).lstrip("-").isdigit():
        return int(group)
    try:
        return conn.getAdminService().lookupGroup(str(group)).getId().getValue()
    except omero.ServerError:
        raise OmeroConnectionError(f"no group named {group!r} on this server") from None


def disconnect(conn: BlitzGateway) -> None:
    """Close what :func:`connect` opened; a session joined by key (someone's
    ``omero login``) is detached from, never closed."""
    client = conn.c
    if client is None:
        return
    try:
        if getattr(conn, "_openhcs_joined", False):
            client.getSession().detachOnDestroy()
    finally:
        client.closeSession()


def _without_secrets(text: str, settings: ConnectionSettings) -> str:
    """A server's refusal can quote what it refused (``Password check failed for '<key>'``)."""
    for secret in (settings.password, settings.session_key):
        if secret:
            text = text.replace(secret, "***")
    return text


def _reason(exc: Exception) -> str:
    for attr in ("reason", "message"):
        value = getattr(exc, attr, None)
        if value:
            return str(value)
    return type(exc).__name__


def address_of(conn: BlitzGateway) -> ServerAddress:
    """Where ``conn`` is connected, so that workers can reach the same server."""
    client = conn.c
    router = client.getProperty("Ice.Default.Router") or None
    return ServerAddress(client.getProperty("omero.host") or "localhost",
                         int(client.getProperty("omero.port") or 4064), router)


def session_key(conn: BlitzGateway) -> str:
    return conn.c.getSessionId()


def join_session(address: ServerAddress, key: str, keep_alive: int = 60) -> omero.client:
    """A client in an existing session, detached so that closing it never closes
    the session of the user who started the work."""
    add_secret(key)
    client = address.new_client()
    try:
        sf = client.joinSession(key)
        sf.detachOnDestroy()
    except Exception as exc:
        client.__del__()
        raise OmeroConnectionError(f"cannot join the session on {address.host}: {_reason(exc)}") from None
    client.enableKeepAlive(keep_alive)
    return client
