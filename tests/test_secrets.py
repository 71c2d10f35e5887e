"""Secrets, counted: a password and session keys never reach anything a user or an
administrator can read.

One case runs every command that talks to OMERO (``list-plates``, ``run
--omero-plate`` with local results, ``launch`` waiting and not, ``status``,
``cancel``, ``server status``), the local commands, and every script (run, describe,
delete; succeeding, refused, and failing on a server error, which omero-py logs with
the call's context), with a password and with a session key, and with a wrong
password and a stale key. It then searches everything captured for the password,
the wrong password, the stale key and every session key the stand-in ever issued
(the user's, the command's, each job's): stdout and stderr (at the file-descriptor
level, so worker processes count), every log record at DEBUG, local result files,
the scripts' outputs, stdout and stderr, job messages, every annotation, file and
table on the server, and the texts of the exceptions raised. Zero hits.
"""

from __future__ import annotations

import logging
import secrets as random_secrets
import uuid

import pytest

from omero_fixtures import DELETE_SCRIPT, DESCRIBE_SCRIPT, RUN_SCRIPT, standin
from reliability import record


class Captured:
    """Every text a case produced, by where it came from."""

    def __init__(self):
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text) -> None:
        if text:
            self.texts.append((where, text if isinstance(text, str) else repr(text)))

    def hits(self, secrets: set[str]) -> list[str]:
        return [f"{where}: ...{text[max(0, text.find(s) - 60):text.find(s) + 60]}..."
                for where, text in self.texts for s in secrets if s in text]


class _Records(logging.Handler):
    def __init__(self, captured: Captured):
        super().__init__(logging.DEBUG)
        self.captured = captured
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record):
        self.captured.add(f"log {record.name}", self.format(record))


@pytest.fixture()
def logs():
    captured = Captured()
    handler = _Records(captured)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _server_texts(server, captured: Captured) -> None:
    """What the server holds that users read: annotations, files (results, the
    scripts' stdout and stderr), tables, job messages."""
    store = server.store
    for kind in ("FileAnnotation", "MapAnnotation", "CommentAnnotation", "TagAnnotation", "OriginalFile",
                 "ScriptJob"):
        for obj in store.all(kind):
            captured.add(f"server {kind}", str(obj))
    for fid, data in store.files.items():
        if fid not in server.scripts:
            captured.add(f"server file {fid}", bytes(data).decode("utf-8", "replace"))
    for fid, table in store.tables.items():
        captured.add(f"server table {fid}", repr(table))


@pytest.mark.reliability("secrets", deadline=600)
def test_no_password_or_session_key_reaches_any_output(tiny_plate, tmp_path, monkeypatch, capfd, logs, request):
    import omero
    from omero.rtypes import rint, rlist, rlong, rstring

    from openhcs_omero_lib.cli.app import main
    from openhcs_omero_lib.execution import executor
    from openhcs_omero_lib.omero.connection import ConnectionSettings, OmeroConnectionError, connect, disconnect
    from openhcs_omero_lib.omero.script_support import run_pipeline_script
    from openhcs_omero_lib.testing.processor import run_script

    password = "pw-" + random_secrets.token_hex(12)
    wrong = "wrong-" + random_secrets.token_hex(12)
    stale = str(uuid.uuid4())
    captured = logs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("OMERO_SESSION_KEY", "OMERO_GROUP", "OMERO_HOST", "OMERO_PORT", "OMERO_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    # workers only, so that worker processes join the session with its key
    monkeypatch.setattr(executor, "PARENT_COMPUTES", False)

    with standin(password=password) as server:
        plate = server.import_plate(tiny_plate)
        server.install_script(RUN_SCRIPT)
        held = server.client(server.user.name, password)  # the user's own session, joined by key
        key = held.getSessionId()
        args = ["--host", server.host, "--port", str(server.port), "--router", server.router]
        monkeypatch.setenv("OMERO_USER", server.user.name)

        def command(*argv: str, env: dict[str, str | None]) -> int:
            for name, value in env.items():
                if value is None:
                    monkeypatch.delenv(name, raising=False)
                else:
                    monkeypatch.setenv(name, value)
            try:
                code = main(list(argv))
            except SystemExit as exc:
                code = exc.code
            out = capfd.readouterr()
            captured.add(f"stdout of {argv[0]}", out.out)
            captured.add(f"stderr of {argv[0]}", out.err)
            return code

        by_password = {"OMERO_PASSWORD": password, "OMERO_SESSION_KEY": None}
        by_key = {"OMERO_PASSWORD": None, "OMERO_SESSION_KEY": key}
        codes = {
            "list-plates password": command("list-plates", *args, env=by_password),
            "list-plates key": command("list-plates", *args, env=by_key),
            "run password": command("run", "--omero-plate", str(plate), "--workers", "2", "--no-progress",
                                    "--out", str(tmp_path / "local"), *args, env=by_password),
            "run key": command("run", "--omero-plate", str(plate), "--workers", "2", "--no-progress",
                               "--attach", "plate", *args, env=by_key),
            "run missing plate": command("run", "--omero-plate", "987654321", "--no-progress", *args, env=by_key),
            "launch": command("launch", "--plate", str(plate), "--workers", "1", "--no-progress", *args,
                              env=by_password),
            "launch no-wait": command("launch", "--plate", str(plate), "--workers", "1", "--no-wait", *args,
                                      env=by_key),
            "list-plates wrong password": command("list-plates", *args,
                                                  env={"OMERO_PASSWORD": wrong, "OMERO_SESSION_KEY": None}),
            "list-plates stale key": command("list-plates", *args,
                                             env={"OMERO_PASSWORD": None, "OMERO_SESSION_KEY": stale}),
            "server status": command("server", "status", "--user", server.user.name, *args, env=by_password),
            "server status wrong password": command("server", "status", "--user", server.user.name, *args,
                                                    env={"OMERO_PASSWORD": wrong, "OMERO_SESSION_KEY": None}),
            "validate": command("validate", "nuclei_count", "--plate", str(tiny_plate), env=by_key),
            "describe": command("describe", str(tiny_plate), env=by_key),
            "local run": command("run", str(tiny_plate), "--workers", "1", "--no-progress",
                                 "--out", str(tmp_path / "folder-run"), env=by_password),
        }
        job = int(next(line for where, line in reversed(captured.texts) if where == "stdout of launch").split()[0])
        for process in server.jobs.values():
            process.wait(120)
        codes["status"] = command("status", str(job), *args, env=by_password)
        codes["cancel"] = command("cancel", str(job), *args, env=by_key)

        # the scripts, as the Processor runs them: succeeding, refused, failing on a server error
        def script(path, **inputs):
            values = {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate)]), **inputs}
            run = run_script(server, path, values, timeout=180)
            for name in ("stdout", "stderr"):
                captured.add(f"{path.name} {name}", getattr(run, name))
            captured.add(f"{path.name} outputs", repr({k: v for k, v in run.outputs.items()}))
            captured.add(f"{path.name} errors", "\n".join(run.errors))
            return run

        script(RUN_SCRIPT, Workers=rint(1))
        script(RUN_SCRIPT, IDs=rlist([rlong(987654321)]))
        server.fail("IQuery.findAllByQuery", omero.InternalException(message="injected"), times=1)
        script(RUN_SCRIPT, Workers=rint(1))
        server.clear_failures()
        script(DESCRIBE_SCRIPT)
        script(DELETE_SCRIPT)

        # exception texts of the API
        for given in ({"password": wrong}, {"session_key": stale}):
            settings = ConnectionSettings(host=server.host, port=server.port, user=server.user.name,
                                          router=server.router, **given)
            with pytest.raises(OmeroConnectionError) as info:
                connect(settings)
            captured.add("OmeroConnectionError", str(info.value))
        conn = connect(ConnectionSettings(host=server.host, port=server.port, user=server.user.name,
                                          router=server.router, password=password))
        try:
            server.fail("IUpdate.saveArray", omero.InternalException(message="injected"), times=1)
            outcome = run_pipeline_script(conn, {"Data_Type": "Plate", "IDs": [plate], "Workers": 1})
            captured.add("ScriptOutcome", outcome.message)
        finally:
            disconnect(conn)
        held.closeSession()
        _server_texts(server, captured)
        for path in tmp_path.rglob("*"):
            if path.is_file():
                captured.add(f"local file {path.name}", path.read_text(errors="replace"))
        sessions = set(server.store.sessions)

    searched = {password, wrong, stale, *sessions}
    hits = captured.hits(searched)
    record(request, secrets=len(hits), texts=len(captured.texts))
    assert not hits, "\n".join(hits[:10])
    # the commands did what they were asked, so that their outputs mean something
    assert codes["list-plates password"] == codes["list-plates key"] == 0, codes
    assert codes["run password"] == codes["run key"] == codes["launch"] == 0, codes
    assert codes["list-plates wrong password"] == codes["list-plates stale key"] == 2, codes
    assert codes["server status"] == 0 and codes["server status wrong password"] == 1, codes
    assert codes["status"] == codes["cancel"] == 0, codes
    assert len(sessions) >= 10 and len(captured.texts) >= 40
