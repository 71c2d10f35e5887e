"""Helpers for tests that use omero-py's script machinery without a server.

What omero-py does that a test must contain:

- ``omero.util.temp_files`` creates a global ``TempFileManager`` when it is first
  imported (``import omero.scripts`` does that). Its folder is ``$OMERO_TMPDIR``,
  else ``~/omero/tmp`` (``$OMERO_USERDIR/tmp`` if set), else the system temp folder.
- ``omero.scripts.parse_text`` writes an Ice config file through that manager
  (``omero.scripts.parse=only``), sets ``ICE_CONFIG`` to it, ``exec``s the script
  text with ``__name__ == "__main__"`` and catches the ``ParseExit`` raised by
  ``omero.scripts.client``; it does *not* remove ``ICE_CONFIG`` afterwards when it
  was unset before.

Use the ``omero_sandbox`` fixture (re-exported by ``conftest.py``) or call
:func:`isolate_omero` with a ``monkeypatch`` and a temporary folder; then parse with
:func:`parse_script_text` / :func:`parse_script_file`. Everything is undone when the
test ends. ``parse_text`` executes the script: only parse trusted script text.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any, Iterator

import pytest


def isolate_omero(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Point omero-py's home, user folder and temporary files into ``tmp_path``.

    Sets ``HOME`` and ``OMERO_TMPDIR``, removes ``OMERO_USERDIR`` and ``ICE_CONFIG``
    (restored by ``monkeypatch`` at teardown) and installs a fresh
    ``TempFileManager`` rooted in ``tmp_path`` as omero-py's global manager, so
    files go there even if ``omero.scripts`` was imported before. Returns that
    manager; call its ``cleanup()`` when done (the fixture does).
    """
    home = tmp_path / "home"
    omero_tmp = tmp_path / "omero_tmp"
    home.mkdir(parents=True, exist_ok=True)
    omero_tmp.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("OMERO_TMPDIR", str(omero_tmp))
    monkeypatch.delenv("OMERO_TEMPDIR", raising=False)
    monkeypatch.delenv("OMERO_USERDIR", raising=False)
    monkeypatch.delenv("ICE_CONFIG", raising=False)

    import omero.util.temp_files as temp_files  # first import creates the global manager (now in tmp)

    # A prefix of its own: two managers of one process must not share a locked folder.
    manager = temp_files.TempFileManager(prefix="omero_test")
    monkeypatch.setattr(temp_files, "manager", manager)
    return manager


@pytest.fixture
def omero_sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """omero-py isolated in ``tmp_path`` for one test; yields the fake home folder."""
    manager = isolate_omero(monkeypatch, tmp_path)
    try:
        yield tmp_path / "home"
    finally:
        os.environ.pop("ICE_CONFIG", None)
        manager.cleanup()


def parse_script_text(text: str) -> Any:
    """``omero.scripts.parse_text`` without leaking ``ICE_CONFIG``: the script's
    ``omero.grid.JobParams`` (``name``, ``description``, ``inputs``, ...)."""
    import omero.scripts

    before = os.environ.get("ICE_CONFIG")
    clients_before = {id(c) for c in _clients()}
    try:
        params = omero.scripts.parse_text(text)
    finally:
        if before is None:
            os.environ.pop("ICE_CONFIG", None)
        else:
            os.environ["ICE_CONFIG"] = before
        # scripts.client() made an omero.client whose Ice communicator (and its
        # threads) stays alive: Ice's object factories hold the client, a cycle the
        # garbage collector cannot see. Destroy the communicators this script made,
        # without client.closeSession(), which would try to reach a server.
        for client in _clients():
            if id(client) not in clients_before:
                _destroy_communicator(client)
    if params is None:
        raise AssertionError("omero.scripts.parse_text returned no parameters")
    return params


def _clients() -> list[Any]:
    import omero.clients

    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, omero.clients.BaseClient)]


def _destroy_communicator(client: Any) -> None:
    communicator = getattr(client, "_BaseClient__ic", None)
    if communicator is None:
        return
    client._BaseClient__ic = None  # so that a later closeSession() does nothing
    client._BaseClient__oa = None
    try:
        communicator.destroy()
    except Exception:
        pass


def parse_script_file(path: str | os.PathLike) -> Any:
    """:func:`parse_script_text` of a script file."""
    return parse_script_text(Path(path).read_text())


def input_names(params: Any) -> set[str]:
    """Names of a parsed script's inputs."""
    return set(params.inputs)


def validation_errors(params: Any, inputs: dict[str, Any]) -> str:
    """``omero.scripts.validate_inputs`` without a server: "" when the inputs are valid."""
    import omero.scripts

    return omero.scripts.validate_inputs(params, inputs)
