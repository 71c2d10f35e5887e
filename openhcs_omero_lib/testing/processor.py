"""Running OMERO scripts against the stand-in as OMERO's Processor does.

Modelled on omero-py ``src/omero/processor.py`` (``ProcessI``, ``ProcessorI``) and
``omero_ext/killableprocess.py``. The Processor writes the script alone, as a file
named ``script``, into a fresh folder with an Ice configuration (``config``) whose
user and password are the job's session key (and ``omero.job``, the job's ID), and
runs ``<python> ./script`` there in a process group of its own, with stdout and
stderr going to the files ``out`` and ``err``. It runs it once with
``omero.scripts.parse`` set to read its parameters (which the script sends back as
the ``omero.scripts.parse`` output) and once to do the work with the inputs placed
in the session. Only the variables of ``ProcessI.make_env`` reach the script.

The job's status and its stdout and stderr files are set when the process is seen
to have ended: when a client polls or waits on it, or at the Processor's periodic
check (every 60 s), and only while the job's session is open (the Processor joins
it to write them). ``cancel`` is SIGTERM to the script's process; ``shutdown``
(what closing the job does) repeats SIGTERM five times six seconds apart, then
SIGKILLs the whole process group. Processes the script leaves running in its group
after it has ended are counted as :attr:`JobProcess.orphans` (a real Processor
leaves them running; the stand-in kills them). Only the Processor waits for the
script's process, as on a server, where it is the Processor's child alone: here it is
a child of the tests' process too, and an exit status some other wait took first is
an error, never reported as 0 (see :meth:`JobProcess._reap`).

:class:`JobProcess` is one such run; :func:`run_script` runs one to the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import omero.scripts
import psutil
from omero.rtypes import unwrap

from openhcs_omero_lib.testing.store import Session

# omero-py processor.py, ProcessI.make_env: the variables copied from the Processor's
# own environment; OMERO_HOME and ICE_CONFIG are set, PYTHONPATH gains lib/python.
_ENV_ALLOW = ("CLASSPATH", "DISPLAY", "DYLD_LIBRARY_PATH", "HOME", "JYTHON_HOME", "LC_ALL", "LANG", "LANGUAGE",
              "LD_LIBRARY_PATH", "MLABRAW_CMD_STR", "OMERODIR", "OMERO_TEMPDIR", "OMERO_TMPDIR", "PATH",
              "PYTHONPATH")
_SHUTDOWN_TRIES = 5
"""ProcessI.shutdown: this many SIGTERMs (with a wait between them) before SIGKILL"""


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


def job_session(server, user, group: int | None = None) -> Session:
    """The session a script runs in: created for the user in ``group`` (the launching
    session's current one: omero-blitz InteractiveProcessorI.newSession), holding one
    reference of its own, so that the script closing its client does not end it;
    whoever created it closes it."""
    session = Session(str(uuidlib.uuid4()), user, user.default_group if group is None else group, connections=1)
    server.store.sessions[session.uuid] = session
    return session


def end_session(server, session: Session) -> None:
    """Close a job's session as the server does (``while mgr.close(uuid) > 0``)."""
    if not session.closed:
        session.closed = True
        server.session_ended(session)


class _Folder:
    """The Processor's side of one run: its own HOME and temporary folder, and the
    fresh folder holding ``script``, ``config``, ``out`` and ``err``."""

    def __init__(self, prefix: str):
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        root = Path(self._tmp.name)
        self.home, self.omero_home, self.dir = root / "home", root / "omero-home", root / "process.dir"
        for folder in (self.home, self.home / "omero-tmp", self.omero_home, self.dir):
            folder.mkdir()
        self.script, self.config, self.out, self.err = (self.dir / n for n in ("script", "config", "out", "err"))

    def cleanup(self) -> None:
        self._tmp.cleanup()


def _prepare(server, script_text: str, session: Session, folder: _Folder, parse: bool,
             job_id: int | None) -> tuple[list[str], dict[str, str]]:
    folder.script.write_text(script_text)
    lines = [f"{k}={v}" for k, v in server.client_properties().items()]
    lines += [f"omero.user={session.uuid}", f"omero.pass={session.uuid}"]
    if job_id is not None:
        lines.append(f"omero.job={job_id}")
    if parse:
        lines.append("omero.scripts.parse=true")
    folder.config.write_text("\n".join(lines) + "\n")
    # The stand-in's Processor has a HOME and OMERO_TMPDIR of its own; the rest of
    # the allow-list comes from this process's environment.
    processor_env = {**os.environ, "HOME": str(folder.home), "OMERO_TMPDIR": str(folder.home / "omero-tmp")}
    env = {k: processor_env[k] for k in _ENV_ALLOW if k in processor_env}
    env["OMERO_HOME"] = str(folder.omero_home)
    lib_python = str(folder.omero_home / "lib" / "python")
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], lib_python]) if env.get("PYTHONPATH") else lib_python
    env["ICE_CONFIG"] = str(folder.config)
    return [sys.executable, "./script"], env


def _run_in_own_group(argv, folder: _Folder, env, stdout, stderr) -> subprocess.Popen:
    # killableprocess.Popen: os.setpgid(0, 0) in the child, so that kill() reaches
    # the script's own children too.
    return subprocess.Popen(argv, cwd=folder.dir, env=env, stdout=stdout, stderr=stderr, process_group=0)


def parse_text(server, script_name: str, script_text: str, user=None, timeout: float = 120,
               group: int | None = None):
    """The script's JobParams, read the way the server reads them."""
    user = user or server.user
    folder = _Folder("standin-parse-")
    session = job_session(server, user, group)
    try:
        argv, env = _prepare(server, script_text, session, folder, True, None)
        with open(folder.out, "w") as out, open(folder.err, "w+") as err:
            proc = _run_in_own_group(argv, folder, env, out, err)
            try:
                proc.wait(timeout)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            err.seek(0)
            stderr = err.read()
        params = session.outputs.get("omero.scripts.parse")
    finally:
        end_session(server, session)
        folder.cleanup()
    if params is None:
        raise RuntimeError(f"{script_name} did not report parameters:\n{stderr[-2000:]}")
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
    """One script job, running in the background as the Processor runs it
    (omero-py processor.py ``ProcessI``). ``on_finish`` sets the job's status and
    keeps its output; it is called once the end is seen, while the session is open.
    With ``timeout`` (``omero.scripts.timeout``, in seconds) the job's session ends
    then, whatever happens meanwhile, and a script still running is shut down."""

    def __init__(self, server, script_name: str, script_text: str, session: Session, job_id: int | None,
                 on_finish: Callable[[JobProcess], None] | None = None, timeout: float | None = None):
        self.server = server
        self.name = script_name
        self.session = session
        self.job_id = job_id
        self.final_status: str | None = None
        self.stdout = self.stderr = ""
        self.orphans = 0
        """Processes of the script's group still running after the script ended."""
        self._on_finish = on_finish
        self._lock = threading.RLock()
        self._exited = threading.Event()
        self._done = threading.Event()
        self._rcode: int | None = None
        self._status_taken = False
        self._folder = _Folder("standin-job-")
        argv, env = _prepare(server, script_text, session, self._folder, False, job_id)
        self._out = open(self._folder.out, "w")
        self._err = open(self._folder.err, "w")
        self.popen = _run_in_own_group(argv, self._folder, env, self._out, self._err)
        self.pid = self.popen.pid
        threading.Thread(target=self._watch, name=f"standin-job-{job_id}", daemon=True).start()
        if timeout is not None:
            timer = threading.Timer(timeout, self._session_expired)
            timer.daemon = True
            timer.start()

    # ---- the Processor's side ------------------------------------------------------------

    def _watch(self) -> None:
        self._reap()
        self._count_orphans()
        self._exited.set()
        # ProcessI.check runs every 60 s (omero.util.Resources) and polls the process.
        if not self._done.wait(self.server.processor_check_seconds):
            self.poll()

    def _reap(self) -> None:
        """Wait for the script's end. Whoever waits for a process first takes its exit
        status, and a later ``Popen.wait`` then reports 0 whatever the end was; a wait
        on the script's PID in the tests (psutil's ``wait_procs`` is one) would make a
        killed script look finished, so such a status is refused by :meth:`poll`."""
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            self._status_taken = True
            return
        self.popen.returncode = os.waitstatus_to_exitcode(status)

    def _count_orphans(self, grace: float = 5.0) -> None:
        """Members of the script's process group left once it has exited (given a
        moment to exit on their own, as multiprocessing's helpers do)."""
        deadline = time.monotonic() + grace
        while True:
            left = _group_members(self.pid)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.orphans = len(left)
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                pass

    def _session_expired(self) -> None:
        """The job's session reaches its time to live; the Processor's check then
        finds it gone and cleans the process up (ProcessI.check, cleanup)."""
        end_session(self.server, self.session)
        self.shutdown()

    def _deactivate(self) -> None:
        """ProcessI.deactivate: once the process has ended, status and output files,
        written through the job's session (so not when that has ended)."""
        with self._lock:
            if self._done.is_set():
                return
            self._rcode = self.popen.returncode
            for stream in (self._out, self._err):
                stream.close()
            self.stdout = self._folder.out.read_text()
            self.stderr = self._folder.err.read_text()
            try:
                if self._on_finish is not None and not self.session.closed:
                    self._on_finish(self)
            finally:
                self._folder.cleanup()
                self._done.set()

    # ---- omero.grid.Process -------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        """The exit code once the Processor has seen the end (see :meth:`poll`)."""
        return self._rcode if self._done.is_set() else None

    @property
    def status(self) -> str:
        """The job status the Processor sets when the process ends."""
        if self.final_status:
            return self.final_status
        return "Finished" if self._rcode == 0 else "Error"

    def poll(self) -> int | None:
        if not self._exited.is_set():
            return None
        if self._status_taken:
            raise RuntimeError(f"job {self.job_id}: the exit status of the script's process was taken by a wait "
                               "outside the Processor (psutil's wait on its PID reaps it); wait on the job instead")
        self._deactivate()
        return self._rcode

    def wait(self, timeout: float | None = None) -> int | None:
        self._exited.wait(timeout)
        return self.poll()

    def exited(self, timeout: float | None = None) -> bool:
        """Whether the script's process has ended, without the Processor seeing it
        (for tests: a detached job that nobody polls)."""
        return self._exited.wait(timeout)

    def cancel(self) -> bool:
        """ProcessI.cancel: SIGTERM to the script's process; True once it has ended."""
        return self._stop(os.kill, signal.SIGTERM)

    def kill(self) -> bool:
        """ProcessI.kill: SIGKILL to the script's whole process group; True only if
        the end was already there to see (the Processor does not wait for it)."""
        return self._stop(os.killpg, signal.SIGKILL)

    def _stop(self, send: Callable[[int, int], None], sig: int) -> bool:
        if self._done.is_set():
            return True
        self.final_status = "Cancelled"
        if not self._exited.is_set():
            try:
                send(self.pid, sig)
            except ProcessLookupError:
                pass
        return self.poll() is not None

    def shutdown(self) -> None:
        """ProcessI.shutdown: cancel, and again while it runs, then kill the group."""
        for _ in range(_SHUTDOWN_TRIES):
            if self.cancel() or self._exited.wait(self.server.shutdown_wait):
                break
        self.kill()


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def run_script(server, script_path: str | os.PathLike, inputs: dict[str, Any], user=None,
               timeout: float = 600) -> ScriptRun:
    """Parse, validate ``inputs`` (rtypes) against the parameters, run, collect outputs."""
    user = user or server.user
    path = Path(script_path)
    text = path.read_text()
    params = parse_text(server, path.name, text, user)
    session = job_session(server, user)
    try:
        errors = validate(params, inputs, session)
        if errors:
            return ScriptRun(-1, {}, "", "", errors=errors)
        session.inputs.update(inputs)
        process = JobProcess(server, path.name, text, session, None)
        if process.wait(timeout) is None:
            process.kill()
            raise TimeoutError(f"{path.name} ran longer than {timeout} s")
        return ScriptRun(process.returncode, dict(session.outputs), process.stdout, process.stderr)
    finally:
        end_session(server, session)


class _SessionInputs:
    """The one ISession call validate_inputs makes, applied to a stand-in session."""

    def __init__(self, session: Session):
        self.session = session

    def setInput(self, sess, key, value):
        self.session.inputs[key] = value
