"""The stand-in speaks OMERO's real interfaces, and refuses what it does not model.

Every operation a stand-in servant implements must be an operation of the real
omero-py proxy of the same interface, with the same parameters in the same order, so
that a test passing against the stand-in exercises calls a real server accepts.
"""

from __future__ import annotations

import inspect
import sys

import pytest

from omero_fixtures import gateway, iquery_calls, standin

SERVANTS = ["QueryService", "UpdateService", "RawFileStoreService", "RawPixelsStoreService", "TableService",
            "SharedResourcesService", "SessionService", "AdminService", "HandleService",
            "ServiceFactoryService"]


def _public_methods(cls) -> dict:
    """Operations written in the class body: not helpers, not the generated ``_async``
    entry points, not the generated stubs that refuse unmodelled operations."""
    return {name: func for name, func in vars(cls).items()
            if not name.startswith("_") and not name.endswith("_async") and inspect.isfunction(func)
            and func.__qualname__.startswith(cls.__name__ + ".")}


def _params(func, drop: set[str]) -> list[str]:
    return [p for p in inspect.signature(func).parameters if p not in drop]


def _proxy_class(api_base: type) -> type:
    module = sys.modules[api_base.__module__]
    return getattr(module, api_base.__name__ + "Prx")


@pytest.mark.parametrize("servant_name", SERVANTS)
def test_servant_operations_match_the_real_proxy(servant_name):
    from openhcs_omero_lib.testing import services

    cls = getattr(services, servant_name)
    prx = _proxy_class(cls.api_base)
    methods = _public_methods(cls)
    assert methods, f"{servant_name} implements no operation"
    problems = []
    for name, func in sorted(methods.items()):
        remote = getattr(prx, name, None)
        if remote is None or not hasattr(prx, "begin_" + name):
            problems.append(f"{name}: not an operation of {prx.__module__}.{prx.__name__}")
            continue
        ours = _params(func, {"self", "current"})
        theirs = _params(remote, {"self", "_ctx"})
        if ours != theirs:
            problems.append(f"{name}{tuple(ours)} but {prx.__name__}.{name}{tuple(theirs)}")
    assert not problems, f"{servant_name} ({cls.api_base.__module__}.{cls.api_base.__name__}):\n" + \
        "\n".join(problems)


def test_the_router_matches_glacier2():
    """The login path (Glacier2) is a servant too; AMD operations take the callback first."""
    import Glacier2

    from openhcs_omero_lib.testing.services import RouterServant

    problems = []
    for name, func in sorted(vars(RouterServant).items()):
        if name.startswith("_") or not inspect.isfunction(func):
            continue
        op = name.removesuffix("_async")
        remote = getattr(Glacier2.RouterPrx, op, None)
        if remote is None:
            problems.append(f"{op}: not an operation of Glacier2.RouterPrx")
            continue
        ours = _params(func, {"self", "current", "_cb"})
        theirs = _params(remote, {"self", "_ctx"})
        if ours != theirs:
            problems.append(f"{op}{tuple(ours)} but RouterPrx.{op}{tuple(theirs)}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def server():
    with standin() as server:
        yield server


def test_unknown_query_is_refused_with_api_usage_exception(server):
    import omero
    import omero.sys
    from omero.rtypes import rstring

    params = omero.sys.ParametersI()
    params.add("name", rstring("x"))
    unknown = "select i from Image i where i.name = :name"
    with gateway(server) as conn:
        query = conn.getQueryService()
        before = iquery_calls(server)
        with pytest.raises(omero.ApiUsageException) as info:
            query.findAllByQuery(unknown, params)
        assert "does not model" in info.value.message
        with pytest.raises(omero.ApiUsageException):
            query.projection("select count(i.id) from Image i", None)
        with pytest.raises(omero.ApiUsageException):
            query.findByQuery(unknown, params)
        # the calls reached the server (refused there, not in the client)
        assert iquery_calls(server) - before == 3


def test_unmodelled_operation_fails_at_once(server):
    """An operation the stand-in does not implement answers with an error (a caller
    must not wait forever for a reply that never comes)."""
    import omero

    with gateway(server) as conn:
        with pytest.raises(omero.ApiUsageException) as info:
            conn.c.sf.activeServices()
        assert "does not model" in info.value.message
        with pytest.raises(omero.ApiUsageException):
            conn.getQueryService().get("Plate", 1)
        # the connection is still fine afterwards
        assert conn.getQueryService().projection(
            "select o.id from Plate o where o.id = :id", _id_params(1)) == []


def _id_params(value: int):
    import omero.sys

    params = omero.sys.ParametersI()
    params.addLong("id", value)
    return params


# Which IQuery method the adapter uses for each query text, with parameters that fit.
_PROJECTIONS = {"PLATE_FINGERPRINT", "PLATE_FIELDS", "PLATE_LIST", "SCREEN_PLATES", "OBJECT_EXISTS", "ROIS",
                "ROIS_NS_PREFIX", "PLATE_IMAGE_KINDS", "PLATE_FILESET_FILES"}


def test_every_adapter_query_is_modelled(server):
    """Each HQL text in queries.py is answered (possibly with nothing), none refused:
    a new query must be modelled by the stand-in before tests can rely on it."""
    import omero.sys
    from omero.rtypes import rstring

    from openhcs_omero_lib.omero import queries as Q

    names = sorted(n for n, v in vars(Q).items() if n.isupper() and isinstance(v, str))
    assert {"PLATE_FIELDS", "PLATE_FINGERPRINT", "PIXELS_CHANNELS"} <= set(names)
    with gateway(server) as conn:
        query = conn.getQueryService()
        opts = conn.SERVICE_OPTS.copy()
        opts.setOmeroGroup(-1)
        for name in names:
            text = getattr(Q, name).replace("{kind}", "Plate")
            params = omero.sys.ParametersI()
            if ":ids" in text:
                params.addLongs("ids", [1, 2])
            if ":id" in text.replace(":ids", ""):
                params.addLong("id", 1)
            if ":ns" in text:
                params.add("ns", rstring("openhcs.omero/results/%"))
            if ":description" in text:
                params.add("description", rstring("sha256:0"))
            if ":owner" in text:
                params.addLong("owner", server.user.id)
            call = query.projection if name in _PROJECTIONS else query.findAllByQuery
            result = call(text, params, opts)  # raises ApiUsageException when not modelled
            assert isinstance(result, list), name


def test_a_save_answers_with_unloaded_references_to_what_existed():
    """What IUpdate returns: the saved objects, with the objects they only point at
    coming back unloaded (omero-server MergeEventListener, ProxyCleanupFilter), so that
    a client must read those again to see their fields; a reference to an object of
    another group is refused (OmeroInterceptor.evaluateLinkages)."""
    import omero
    import omero.model

    from openhcs_omero_lib.omero import annotations as A
    from openhcs_omero_lib.omero.plate import in_group

    with standin() as server:
        other = server.add_group("elsewhere")
        server.user.groups.append(other.id)
        screen_id = server.add_screen("screen", [])
        with gateway(server) as conn:
            group = conn.getEventContext().groupId
            ofile = A.upload_files(conn, [("a.csv", b"x,y\n", "text/csv")], group)[0]
            assert ofile.isLoaded() and ofile.getName().getValue() == "a.csv"  # what was saved
            ann = A.file_annotations(conn, [ofile], "test/ns", group)[0]
            assert ann.isLoaded() and ann.getNs().getValue() == "test/ns"
            assert not ann.getFile().isLoaded()
            with pytest.raises(omero.UnloadedEntityException):
                ann.getFile().getMimetype()

            link = omero.model.ScreenAnnotationLinkI()
            link.setParent(omero.model.ScreenI(screen_id, False))
            link.setChild(omero.model.FileAnnotationI(ann.getId().getValue(), False))
            saved = conn.getUpdateService().saveAndReturnObject(link, in_group(conn, group))
            assert saved.isLoaded() and saved.getId() is not None
            assert not saved.getParent().isLoaded() and not saved.getChild().isLoaded()

            elsewhere = A.upload_files(conn, [("b.csv", b"z\n", "text/csv")], other.id)[0]
            with pytest.raises(omero.SecurityViolation):
                A.file_annotations(conn, [elsewhere], "test/ns", group)
