"""The real-server suite: the scenarios of ``tests/scenarios.py`` against an OMERO server.

Configured by the environment: ``OMERO_TEST_HOST`` (and ``OMERO_TEST_PORT``, default
4064), ``OMERO_TEST_USER`` with ``OMERO_TEST_PASSWORD`` or ``OMERO_TEST_SESSION_KEY``,
optionally ``OMERO_TEST_GROUP`` (ID or name; the test sessions switch to it) and
``OMERO_TEST_ROOT_PASSWORD`` (to upload the bundle's scripts as official scripts when
the server lacks them or has other versions; they are put back as they were at the
end), and ``OMERO_TEST_COLLEAGUE_USER`` with ``OMERO_TEST_COLLEAGUE_PASSWORD`` (another
member of the group, which must be read-annotate or read-write, for the scenarios of
two users on one plate). Without a host and credentials every test here is skipped. Everything here is
marked ``omero``. ``OMERO_TEST_ROUTER`` (a non-standard ``Ice.Default.Router``) lets the
stand-in suite run this suite against an :class:`~openhcs_omero_lib.testing.OmeroStandIn`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import scenarios

HERE = Path(__file__).resolve().parent
SKIP_REASON = ("set OMERO_TEST_HOST (and OMERO_TEST_USER/OMERO_TEST_PASSWORD or OMERO_TEST_SESSION_KEY) to run "
               "against a real OMERO server; see README 'Testing against a real OMERO'")


def configured() -> bool:
    env = os.environ
    return bool(env.get("OMERO_TEST_HOST") and (env.get("OMERO_TEST_SESSION_KEY") or
                                                 (env.get("OMERO_TEST_USER") and env.get("OMERO_TEST_PASSWORD"))))


def pytest_collection_modifyitems(config, items):
    # A conftest's hook sees every collected item: mark only this folder's.
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.omero)
            if not configured():
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def settings_from_environment():
    from openhcs_omero_lib.omero.connection import ConnectionSettings

    env = os.environ
    return ConnectionSettings(host=env["OMERO_TEST_HOST"], port=int(env.get("OMERO_TEST_PORT") or 4064),
                              user=env.get("OMERO_TEST_USER") or None, password=env.get("OMERO_TEST_PASSWORD") or None,
                              session_key=env.get("OMERO_TEST_SESSION_KEY") or None,
                              router=env.get("OMERO_TEST_ROUTER") or None)


class RealServerTarget(scenarios.Target):
    """The server of the OMERO_TEST_* variables. With a group, every session of the
    target switches to it, so that plates and results are created there."""

    def __init__(self, settings, group: str | None = None):
        super().__init__()
        self._settings = settings
        self.group = group

    def settings(self):
        return self._settings

    def connect(self):
        conn = super().connect()
        if self.group:
            try:
                gid = int(self.group) if self.group.isdigit() else \
                    conn.getAdminService().lookupGroup(self.group).getId().getValue()
                if conn.setGroupForSession(gid) is False:
                    raise RuntimeError(f"{self._settings.user or 'this user'} is not a member of group {self.group}")
            except Exception:
                from openhcs_omero_lib.omero.connection import disconnect

                disconnect(conn)
                raise
        return conn


class ScriptInstaller:
    """Makes the server's copies of the bundle's scripts this checkout's: as an
    administrator, uploads missing ones as official scripts and replaces differing
    ones; :meth:`restore` puts the server back as it was."""

    def __init__(self, settings, root_password: str | None):
        self.settings = settings
        self.root_password = root_password
        self.undo: list[tuple[str, int, str | None]] = []

    def _root(self):
        import dataclasses

        from openhcs_omero_lib.omero.connection import connect

        return connect(dataclasses.replace(self.settings, user="root", password=self.root_password, session_key=None))

    def ensure(self) -> None:
        from omero.rtypes import unwrap

        from openhcs_omero_lib.omero.connection import connect, disconnect

        wrong = []
        conn = connect(self.settings)
        try:
            svc = conn.getScriptService()
            for path in sorted(scenarios.SCRIPTS_DIR.glob("*.py")):
                server_path = scenarios.SCRIPT_FOLDER + path.name
                sid = unwrap(svc.getScriptID(server_path))
                have = svc.getScriptText(sid) if sid and sid > 0 else None
                if have != path.read_text():
                    wrong.append((path, server_path, sid if have is not None else None, have))
        finally:
            disconnect(conn)
        if not wrong:
            return
        if not self.root_password:
            names = ", ".join(f"{p.name} ({'differs' if sid else 'missing'})" for p, _, sid, _ in wrong)
            pytest.fail(f"the server's openhcs scripts are not this checkout's: {names}. Install them on the server "
                        "(install.sh --omero-server) or set OMERO_TEST_ROOT_PASSWORD to upload them", pytrace=False)
        import omero.model

        root = self._root()
        try:
            svc = root.getScriptService()
            for path, server_path, sid, have in wrong:
                if sid:
                    svc.editScript(omero.model.OriginalFileI(sid, False), path.read_text())
                    self.undo.append(("edit", sid, have))
                else:
                    # Relative to lib/scripts, as 'omero script upload --official' passes it.
                    sid = svc.uploadOfficialScript(server_path.lstrip("/"), path.read_text())
                    self.undo.append(("delete", sid, None))
        finally:
            disconnect(root)

    def restore(self) -> None:
        import omero.model

        from openhcs_omero_lib.omero.connection import disconnect

        if not self.undo:
            return
        root = self._root()
        try:
            svc = root.getScriptService()
            for action, sid, text in reversed(self.undo):
                if action == "edit":
                    svc.editScript(omero.model.OriginalFileI(sid, False), text)
                else:
                    svc.deleteScript(sid)
            self.undo.clear()
        finally:
            disconnect(root)


@pytest.fixture(scope="session")
def real_settings():
    return settings_from_environment()


@pytest.fixture(scope="session")
def installed_scripts(real_settings):
    installer = ScriptInstaller(real_settings, os.environ.get("OMERO_TEST_ROOT_PASSWORD") or None)
    installer.ensure()
    yield
    installer.restore()


@pytest.fixture()
def colleague(real_settings, installed_scripts):
    """A second user of the test group (``OMERO_TEST_COLLEAGUE_USER`` and
    ``OMERO_TEST_COLLEAGUE_PASSWORD``), for the scenarios of two users on one plate."""
    import dataclasses

    env = os.environ
    if not (env.get("OMERO_TEST_COLLEAGUE_USER") and env.get("OMERO_TEST_COLLEAGUE_PASSWORD")):
        pytest.skip("set OMERO_TEST_COLLEAGUE_USER and OMERO_TEST_COLLEAGUE_PASSWORD (another member of the "
                    "test group) to run the scenarios of two users")
    settings = dataclasses.replace(real_settings, user=env["OMERO_TEST_COLLEAGUE_USER"],
                                   password=env["OMERO_TEST_COLLEAGUE_PASSWORD"], session_key=None)
    return RealServerTarget(settings, env.get("OMERO_TEST_GROUP") or None)


@pytest.fixture()
def target(real_settings, installed_scripts):
    """A target whose creations are removed when the test ends, whether it passed or not."""
    target = RealServerTarget(real_settings, os.environ.get("OMERO_TEST_GROUP") or None)
    try:
        yield target
    finally:
        problems = target.cleanup()
    assert problems == [], problems
