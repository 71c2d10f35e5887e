"""Running OMERO scripts against the stand-in as OMERO's Processor does.

The Processor copies the script alone into a temporary folder, gives it an Ice
configuration whose user and password are the job's session key, and runs it with
the server's Python, once with ``omero.scripts.parse`` set to read its parameters
(which the script sends back as the ``omero.scripts.parse`` output) and once to do
the work with the inputs placed in the session. Only an allow-list of environment
variables reaches the script. :func:`run_script` does the same over the stand-in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import omero.scripts
from omero.rtypes import unwrap

from .store import Session

_ENV_ALLOW = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ")


@dataclass
class ScriptRun:
    returncode: int
    outputs: dict[str, Any]
    stdout: str
    stderr: str
    errors: list[str] = field(default_factory=list)
    """Input validation errors; the script did not run when there are any."""

    def output(self, key: str) -> Any:
        return unwrap(self.outputs.get(key))


def _job_session(server, user) -> Session:
    session = Session(str(uuidlib.uuid4()), user, user.default_group)
    server.store.sessions[session.uuid] = session
    return session


def _launch(server, script: Path, session: Session, workdir: Path, parse: bool, timeout: float):
    config = workdir / "ice.config"
    lines = [f"{k}={v}" for k, v in server.client_properties().items()]
    lines += [f"omero.user={session.uuid}", f"omero.pass={session.uuid}"]
    if parse:
        lines.append("omero.scripts.parse=true")
    config.write_text("\n".join(lines) + "\n")
    env = {k: os.environ[k] for k in _ENV_ALLOW if k in os.environ}
    env.update(ICE_CONFIG=str(config), HOME=str(workdir), OMERO_TMPDIR=str(workdir / "omero-tmp"))
    return subprocess.run([sys.executable, script.name], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout)


def parse_params(server, script_path: str | os.PathLike, user=None, timeout: float = 120):
    """The script's JobParams, read the way the server reads them."""
    user = user or server.user
    with tempfile.TemporaryDirectory(prefix="standin-parse-") as tmp:
        workdir = Path(tmp)
        script = workdir / Path(script_path).name
        shutil.copy(script_path, script)
        session = _job_session(server, user)
        try:
            done = _launch(server, script, session, workdir, True, timeout)
            params = session.outputs.get("omero.scripts.parse")
        finally:
            session.closed = True
    if params is None:
        raise RuntimeError(f"{script.name} did not report parameters:\n{done.stderr[-2000:]}")
    return params.getValue()


def run_script(server, script_path: str | os.PathLike, inputs: dict[str, Any], user=None,
               timeout: float = 600) -> ScriptRun:
    """Parse, validate ``inputs`` (rtypes) against the parameters, run, collect outputs."""
    user = user or server.user
    params = parse_params(server, script_path, user)
    session = _job_session(server, user)
    # As processor.py does: defaults of omitted inputs go into the session.
    errors = omero.scripts.validate_inputs(params, inputs, _SessionInputs(session), session.uuid)
    if errors:
        session.closed = True
        return ScriptRun(-1, {}, "", "", errors=[e for e in errors.splitlines() if e.strip()])
    session.inputs.update(inputs)
    with tempfile.TemporaryDirectory(prefix="standin-job-") as tmp:
        workdir = Path(tmp)
        script = workdir / Path(script_path).name
        shutil.copy(script_path, script)
        try:
            done = _launch(server, script, session, workdir, False, timeout)
            outputs = dict(session.outputs)
        finally:
            session.closed = True
    return ScriptRun(done.returncode, outputs, done.stdout, done.stderr)


class _SessionInputs:
    """The one ISession call validate_inputs makes, applied to a stand-in session."""

    def __init__(self, session: Session):
        self.session = session

    def setInput(self, sess, key, value):
        self.session.inputs[key] = value
