"""Running OMERO scripts against the stand-in as OMERO's Processor does.

The Processor copies the script alone into a temporary folder, gives it an Ice
configuration whose user and password are the job's session key (and ``omero.job``,
the job's ID), and runs it with the server's Python, once with ``omero.scripts.parse``
set to read its parameters (which the script sends back as the
``omero.scripts.parse`` output) and once to do the work with the inputs placed in
the session. Only an allow-list of environment variables reaches the script. Cancel
is SIGTERM; at the end the job's status is set from the exit code (or "Cancelled"),
its stdout and stderr are kept as files of the job, and its session is closed.

:class:`JobProcess` is one such run; :func:`run_script` runs one to the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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


def job_session(server, user) -> Session:
    session = Session(str(uuidlib.uuid4()), user, user.default_group)
    server.store.sessions[session.uuid] = session
    return session


def _prepare(server, script_name: str, script_text: str, session: Session, workdir: Path, parse: bool,
             job_id: int | None):
    script = workdir / script_name
    script.write_text(script_text)
    config = workdir / "ice.config"
    lines = [f"{k}={v}" for k, v in server.client_properties().items()]
    lines += [f"omero.user={session.uuid}", f"omero.pass={session.uuid}"]
    if job_id is not None:
        lines.append(f"omero.job={job_id}")
    if parse:
        lines.append("omero.scripts.parse=true")
    config.write_text("\n".join(lines) + "\n")
    env = {k: os.environ[k] for k in _ENV_ALLOW if k in os.environ}
    env.update(ICE_CONFIG=str(config), HOME=str(workdir), OMERO_TMPDIR=str(workdir / "omero-tmp"))
    return [sys.executable, script.name], env


def parse_text(server, script_name: str, script_text: str, user=None, timeout: float = 120):
    """The script's JobParams, read the way the server reads them."""
    user = user or server.user
    with tempfile.TemporaryDirectory(prefix="standin-parse-") as tmp:
        session = job_session(server, user)
        try:
            argv, env = _prepare(server, script_name, script_text, session, Path(tmp), True, None)
            done = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
            params = session.outputs.get("omero.scripts.parse")
        finally:
            session.closed = True
    if params is None:
        raise RuntimeError(f"{script_name} did not report parameters:\n{done.stderr[-2000:]}")
    return params.getValue()


def parse_params(server, script_path: str | os.PathLike, user=None, timeout: float = 120):
    path = Path(script_path)
    return parse_text(server, path.name, path.read_text(), user, timeout)


def validate(params, inputs: dict[str, Any], session: Session) -> list[str]:
    """As processor.py does: check inputs and put the defaults of omitted ones into
    the session; the errors, one per line."""
    errors = omero.scripts.validate_inputs(params, inputs, _SessionInputs(session), session.uuid)
    return [e for e in (errors or "").splitlines() if e.strip()]


class JobProcess:
    """One script job, running in the background as the Processor runs it."""

    def __init__(self, server, script_name: str, script_text: str, session: Session, job_id: int | None,
                 on_finish: Callable[["JobProcess"], None] | None = None):
        self.server = server
        self.session = session
        self.job_id = job_id
        self.final_status: str | None = None
        self.stdout = self.stderr = ""
        self._on_finish = on_finish
        self._done = threading.Event()
        self._tmp = tempfile.TemporaryDirectory(prefix="standin-job-")
        workdir = Path(self._tmp.name)
        argv, env = _prepare(server, script_name, script_text, session, workdir, False, job_id)
        self._out = open(workdir / "stdout", "w+")
        self._err = open(workdir / "stderr", "w+")
        self.popen = subprocess.Popen(argv, cwd=workdir, env=env, stdout=self._out, stderr=self._err, text=True)
        threading.Thread(target=self._watch, name=f"standin-job-{job_id}", daemon=True).start()

    def _watch(self) -> None:
        self.popen.wait()
        try:
            for stream in (self._out, self._err):
                stream.flush()
                stream.seek(0)
            self.stdout, self.stderr = self._out.read(), self._err.read()
            self._out.close()
            self._err.close()
            if self._on_finish is not None:
                self._on_finish(self)
        finally:
            self.session.closed = True  # the Processor closes the job's session at the end
            self._tmp.cleanup()
            self._done.set()

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self._done.is_set() else None

    @property
    def status(self) -> str:
        """The job status the Processor sets when the process ends."""
        if self.final_status:
            return self.final_status
        return "Finished" if self.popen.returncode == 0 else "Error"

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.returncode

    def cancel(self) -> bool:
        """SIGTERM, as ``ProcessI.cancel``; True when the process has ended."""
        if self._done.is_set():
            return True
        self.final_status = "Cancelled"
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self._done.is_set()

    def kill(self) -> bool:
        if self._done.is_set():
            return True
        self.final_status = "Cancelled"
        if self.popen.poll() is None:
            self.popen.kill()
        return self._done.wait(5)


def run_script(server, script_path: str | os.PathLike, inputs: dict[str, Any], user=None,
               timeout: float = 600) -> ScriptRun:
    """Parse, validate ``inputs`` (rtypes) against the parameters, run, collect outputs."""
    user = user or server.user
    path = Path(script_path)
    text = path.read_text()
    params = parse_text(server, path.name, text, user)
    session = job_session(server, user)
    errors = validate(params, inputs, session)
    if errors:
        session.closed = True
        return ScriptRun(-1, {}, "", "", errors=errors)
    session.inputs.update(inputs)
    process = JobProcess(server, path.name, text, session, None)
    if process.wait(timeout) is None:
        process.kill()
        raise TimeoutError(f"{path.name} ran longer than {timeout} s")
    return ScriptRun(process.returncode, dict(session.outputs), process.stdout, process.stderr)


class _SessionInputs:
    """The one ISession call validate_inputs makes, applied to a stand-in session."""

    def __init__(self, session: Session):
        self.session = session

    def setInput(self, sess, key, value):
        self.session.inputs[key] = value
