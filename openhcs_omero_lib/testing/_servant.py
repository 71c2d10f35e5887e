"""Turning plain Python methods into Ice servants of OMERO's interfaces.

OMERO declares its services with asynchronous dispatch (AMD): Ice calls
``findAllByQuery_async(cb, query, params, current)`` and waits for ``cb``. The
stand-in's services are written as plain methods returning values; :func:`servant`
generates the ``_async`` entry points, and every call, synchronous or not, goes
through :meth:`StandInServant._call`, which counts it, adds the configured latency,
and raises any injected error.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Callable

import Ice

from openhcs_omero_lib.testing import acl


class StandInServant:
    """Mixin for stand-in servants; ``server`` is the :class:`~.server.OmeroStandIn`."""

    service_name = "?"
    void: frozenset[str] = frozenset()
    one_call_at_a_time = False
    """OMERO's RawPixelsStore returns every read in one buffer it reuses, and the reply
    is marshalled after its lock is released: two requests in flight on one store can
    get each other's pixels. Servants marked so count such overlaps as
    ``<service>.overlapping`` in the server's ``calls``, for tests to forbid."""

    def __init__(self, server, session):
        self.server = server
        self.session = session

    def _call(self, name: str, func: Callable[..., Any], args: tuple, current) -> Any:
        watch = self.server.in_flight(self) if self.one_call_at_a_time else contextlib.nullcontext()
        with watch:
            self.server._before_call(f"{self.service_name}.{name}", self.session, current)
            result = func(self, *args, current=current)
        # As the server's ProxyCleanupFilter does with every answer: objects carry the
        # caller's restrictions (canAnnotate() and its siblings).
        return acl.as_sent_to(self.server.store, result, self.session.user)


def _split_current(args: tuple, current):
    """Ice passes the call's ``Current`` as the last positional argument."""
    if args and type(args[-1]).__name__ == "Current":
        return args[:-1], args[-1]
    return args, current


def _make_async(name: str, func: Callable[..., Any], void: bool):
    def call_async(self, _cb, *args, current=None):
        args, current = _split_current(args, current)
        try:
            result = self._call(name, func, args, current)
        except Ice.Exception as exc:
            _cb.ice_exception(exc)
            return
        except Exception as exc:  # a stand-in bug: report it as the server would
            _cb.ice_exception(Ice.UnknownException(f"{type(exc).__name__}: {exc}"))
            return
        if void:
            _cb.ice_response()
        else:
            _cb.ice_response(result)
    call_async.__name__ = name + "_async"
    return call_async


def _make_sync(name: str, func: Callable[..., Any]):
    @functools.wraps(func)
    def call(self, *args, current=None):
        args, current = _split_current(args, current)
        return self._call(name, func, args, current)
    return call


def _unmodelled(service: str, op: str):
    def fail(self, *args, current=None):
        import omero

        raise omero.ApiUsageException(message=f"the OMERO stand-in does not model {service}.{op}")
    return fail


def servant(api_base: type, name: str, void: set[str] = frozenset()):
    """Class decorator: the public methods of the class implement ``api_base``'s
    operations of the same names (AMD or not), counted as ``name.method``."""

    def decorate(cls):
        cls.service_name = name
        cls.void = frozenset(void)
        cls.api_base = api_base
        for attr, func in list(vars(cls).items()):
            if attr.startswith("_") or not inspect.isfunction(func):
                continue
            if not hasattr(api_base, attr) and not hasattr(api_base, attr + "_async"):
                raise TypeError(f"{cls.__name__}.{attr} is not an operation of {api_base.__name__}")
            if hasattr(api_base, attr + "_async"):
                setattr(cls, attr + "_async", _make_async(attr, func, attr in void))
                setattr(cls, attr, func)  # callable directly by other stand-in code
            else:
                setattr(cls, attr, _make_sync(attr, func))
        # Every other operation answers at once with an error: a call the stand-in
        # does not model must fail loudly, not leave the caller waiting for a reply.
        for attr in dir(api_base):
            if attr.startswith(("_", "ice_")) or attr in vars(cls) or not callable(getattr(api_base, attr)):
                continue
            op = attr[:-6] if attr.endswith("_async") else attr
            if op in vars(cls):
                continue
            unmodelled = _unmodelled(name, op)
            setattr(cls, attr, _make_async(op, unmodelled, False) if attr.endswith("_async")
                    else _make_sync(op, unmodelled))
        return cls

    return decorate
