"""install.sh --omero-server: what it installs where, checked with a recording
stand-in for the server's Python (the real one would be changed by pip)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def fake_server(tmp_path):
    omerodir = tmp_path / "OMERO.server"
    (omerodir / "lib" / "scripts" / "omero" / "analysis_scripts").mkdir(parents=True)
    log = tmp_path / "python.log"
    python = tmp_path / "server-python"
    # Answers the import check, records pip calls.
    python.write_text(f"#!/usr/bin/env bash\necho \"$@\" >> {log}\nexit 0\n")
    python.chmod(0o755)
    return omerodir, python, log


def _install(*args):
    return subprocess.run(["bash", str(REPO / "install.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, "HOME": os.environ.get("HOME", "/tmp")})


def test_installs_library_and_scripts_into_the_server(fake_server):
    omerodir, python, log = fake_server
    done = _install("--omero-server", str(omerodir), "--python", str(python))
    assert done.returncode == 0, done.stderr
    dest = omerodir / "lib" / "scripts" / "omero" / "openhcs"
    shipped = sorted(p.name for p in (REPO / "scripts" / "omero" / "openhcs").glob("*.py"))
    assert sorted(p.name for p in dest.glob("*.py")) == shipped
    assert "Run_HCS_Pipeline.py" in shipped
    assert f"-m pip install -q {REPO}" in log.read_text()
    assert "omero script launch" in done.stdout


def test_with_dask_installs_the_dask_extra(fake_server):
    omerodir, python, log = fake_server
    done = _install("--omero-server", str(omerodir), "--python", str(python), "--with-dask")
    assert done.returncode == 0, done.stderr
    assert f"-m pip install -q {REPO}[dask]" in log.read_text()


def test_uninstall_removes_scripts_and_package(fake_server):
    omerodir, python, log = fake_server
    assert _install("--omero-server", str(omerodir), "--python", str(python)).returncode == 0
    done = _install("--omero-server", str(omerodir), "--uninstall", "--python", str(python))
    assert done.returncode == 0, done.stderr
    assert not (omerodir / "lib" / "scripts" / "omero" / "openhcs").exists()
    assert (omerodir / "lib" / "scripts" / "omero" / "analysis_scripts").exists()
    assert "-m pip uninstall -y -q openhcs-omero" in log.read_text()


def test_refuses_a_folder_that_is_not_a_server(tmp_path):
    done = _install("--omero-server", str(tmp_path))
    assert done.returncode != 0
    assert "not an OMERO.server directory" in done.stderr


def test_refuses_a_python_without_omero(fake_server, tmp_path):
    omerodir, _, _ = fake_server
    python = tmp_path / "plain-python"
    python.write_text("#!/usr/bin/env bash\nexit 1\n")
    python.chmod(0o755)
    done = _install("--omero-server", str(omerodir), "--python", str(python))
    assert done.returncode != 0 and "cannot import omero" in done.stderr
    assert not (omerodir / "lib" / "scripts" / "omero" / "openhcs").exists()
