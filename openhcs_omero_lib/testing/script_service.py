"""The stand-in's script service: IScript, the script processes it starts, and JobHandle.

As on a server: ``IScript.runScript`` creates a ScriptJob, validates the inputs
against the parameters the script declares (read by running it in parse mode) and
starts it through :class:`~.processor.JobProcess`, returning a ``ScriptProcess``
proxy (poll, wait, cancel, getResults). A ``JobHandle`` attached to the job's ID
reads and sets its status and message from any session of its user; this is how a
running script can publish progress and how a job is cancelled by ID.

``JobHandle.cancelJob`` marks the job cancelled; whether a real server then also
signals the script depends on its process manager, so by default the stand-in does
not (``server.cancel_job_signals``): a script must notice by itself.

The ScriptProcess stands for the job's InteractiveProcessor too (omero-blitz
``omero/grid/InteractiveProcessorI.java``, ``ome/services/blitz/impl/ScriptProcessI.java``):
the job's session is created in the launching session's current group and lives
``server.scripts_timeout`` seconds at most (``omero.scripts.timeout``; keep-alive does
not extend it); ``getResults`` refuses to wait more than 5 s and answers once;
``close(detach)`` ends the job's session and, unless detached, shuts the script down,
and so does the end of the launching session (``omero/cmd/SessionI.java``,
``cleanServants``) for a job that was not detached.
"""

from __future__ import annotations

import threading
import time

import Ice
import omero
import omero.api
import omero.grid
import omero.model
from omero.rtypes import rlong, robject, rstring, rtime

from openhcs_omero_lib.testing._servant import StandInServant, servant
from openhcs_omero_lib.testing.processor import JobProcess, end_session, job_session, parse_text, validate

_FINAL = ("Finished", "Error", "Cancelled")


def _now():
    return rtime(int(time.time() * 1000))


def set_job_status(server, job, status: str | None = None, message: str | None = None) -> str | None:
    """``setStatusAndMessage`` as JobBean does it; returns the previous status or message."""
    with server.store.lock:
        previous = None
        if message is not None:
            previous = job.getMessage().getValue() if job.getMessage() else ""
            job.setMessage(rstring(message))
        if status is not None:
            previous = job.getStatus().getValue().getValue()
            job.setStatus(omero.model.JobStatusI())
            job.getStatus().setValue(rstring(status))
            if status == "Running":
                job.setStarted(_now())
            elif status in _FINAL:
                job.setFinished(_now())
        server.store.touch(job)
        return previous


def new_job(server, user, group: int):
    """A submitted ScriptJob of ``user`` in ``group``, as SharedResourcesI.acquireProcessor saves it."""
    job = omero.model.ScriptJobI()
    job.setUsername(rstring(user.name))
    job.setGroupname(rstring(server.store.groups[group].name))
    job.setType(rstring("ScriptJob"))
    job.setMessage(rstring(""))
    job.setSubmitted(_now())
    job.setScheduledFor(_now())
    job.setStatus(omero.model.JobStatusI())
    job.getStatus().setValue(rstring("Submitted"))
    return server.store.add(job, user, group)


def _copy_job(job):
    copy = omero.model.ScriptJobI(job.getId().getValue(), True)
    for attr in ("Username", "Groupname", "Type", "Message", "Submitted", "ScheduledFor", "Started", "Finished",
                 "Description"):
        getattr(copy, "set" + attr)(getattr(job, "get" + attr)())
    status = omero.model.JobStatusI()
    status.setValue(job.getStatus().getValue())
    copy.setStatus(status)
    copy._details = job.getDetails()
    return copy


@servant(omero.api.IScript, "IScript")
class ScriptService(StandInServant, omero.api.IScript):
    def getScriptID(self, path, current=None):
        for file_id in self.server.scripts:
            f = self.server.store.get("OriginalFile", file_id)
            if f.getPath().getValue() + f.getName().getValue() == path:
                return file_id
        return -1

    def getScripts(self, current=None):
        return [self.server.store.get("OriginalFile", i) for i in self.server.scripts]

    def getScriptText(self, scriptID, current=None):
        return self.server.scripts.get(scriptID)

    def getParams(self, scriptID, current=None):
        return parse_text(self.server, self._file(scriptID).getName().getValue(), self.server.scripts[scriptID],
                          self.session.user, group=self.session.group)

    def _file(self, script_id):
        if script_id not in self.server.scripts:
            raise omero.ApiUsageException(message=f"no script with ID {script_id}")
        return self.server.store.get("OriginalFile", script_id)

    def runScript(self, scriptID, inputs, waitSecs, current=None):
        server, user = self.server, self.session.user
        name = self._file(scriptID).getName().getValue()
        if not server.processor_available:
            raise omero.NoProcessorAvailable(message="No processor available! [0 response(s)]", processorCount=0)
        text = server.scripts[scriptID]
        group = self.session.group
        params = parse_text(server, name, text, user, group=group)
        job = new_job(server, user, group)
        job_id = job.getId().getValue()
        session = job_session(server, user, group)
        errors = validate(params, dict(inputs), session)
        if errors:
            end_session(server, session)
            set_job_status(server, job, "Error")
            raise omero.ValidationException(message="Invalid parameters:\n" + "\n".join(errors))
        session.inputs.update(inputs)
        set_job_status(server, job, "Running")
        process = JobProcess(server, name, text, session, job_id, on_finish=self._finished(job),
                             timeout=server.scripts_timeout)
        server.jobs[job_id] = process
        prx = server.add_servant(ScriptProcessService, self.session, omero.grid.ScriptProcessPrx,
                                 process=process, job=job)
        ip = server.servant_of(prx)
        ip.identity = prx.ice_getIdentity()
        server.closes_with(self.session, ip._session_ended)
        return prx

    def _finished(self, job):
        server = self.server

        def finish(process: JobProcess) -> None:
            # ProcessI.deactivate: status from the exit code (or Cancelled), then output files.
            set_job_status(server, job, process.status)
            owner = next(u for u in server.store.users.values() if u.id == server.store.owner_of(job))
            for name, text in (("stdout", process.stdout), ("stderr", process.stderr)):
                if not text:
                    continue
                ofile = omero.model.OriginalFileI()
                ofile.setName(rstring(name))
                ofile.setPath(rstring("/"))
                ofile.setMimetype(rstring("text/plain"))
                ofile.setSize(rlong(len(text.encode())))
                ofile = server.store.add(ofile, owner, server.store.group_of(job))
                server.store.files[ofile.getId().getValue()] = bytearray(text.encode())
                link = omero.model.JobOriginalFileLinkI()
                link.setParent(omero.model.ScriptJobI(job.getId().getValue(), False))
                link.setChild(omero.model.OriginalFileI(ofile.getId().getValue(), False))
                server.store.add(link, owner, server.store.group_of(job), {"parent": job.getId().getValue()})
        return finish


@servant(omero.grid.ScriptProcess, "ScriptProcess", void={"close", "setMessage"})
class ScriptProcessService(StandInServant, omero.grid.ScriptProcess):
    process: JobProcess
    job = None
    identity = None
    detach = False
    stopped = False
    results_taken = False

    def getJob(self, current=None):
        return _copy_job(self.job)

    def poll(self, current=None):
        code = self.process.poll()
        return None if code is None else omero.rtypes.rint(code)

    def wait(self, current=None):
        return self.process.wait()

    def cancel(self, current=None):
        return self.process.cancel()

    def kill(self, current=None):
        return self.process.kill()

    def getResults(self, waitSecs, current=None):
        # ScriptProcessI.getResults, then InteractiveProcessorI.getResults (finishedOrThrow)
        if waitSecs > 5 or waitSecs < 0:
            raise omero.ApiUsageException(message=f"Refusing to wait more than 5 seconds: {waitSecs}")
        if self.results_taken:
            raise omero.ApiUsageException(message="No current process.")
        if self.process.wait(waitSecs) is None:
            raise omero.ApiUsageException(message="Process still running.")
        if self.process.session.closed:
            raise omero.RemovedSessionException(message="the job's session is closed")
        results = dict(self.process.session.outputs)
        store, job_id = self.server.store, self.job.getId().getValue()
        for link in store.children("JobOriginalFileLink", "parent", job_id):
            f = store.get("OriginalFile", link.getChild().getId().getValue())
            results[f.getName().getValue()] = robject(omero.model.OriginalFileI(f.getId().getValue(), False))
        self.results_taken = True
        return results

    def setMessage(self, message, current=None):
        set_job_status(self.server, self.job, message=message)

    def close(self, detach, current=None):
        # ScriptProcessI.close: setDetach, stop, unregister
        self.detach = detach
        self._stop()
        self.server.remove_servant(current)

    def _stop(self) -> None:
        """InteractiveProcessorI.stop: unless detached, shut the script down (one-way)
        and close the job's session; detached, the job goes on in its session."""
        if self.stopped:
            return
        self.stopped = True
        if self.detach:
            return
        if not self.results_taken:
            threading.Thread(target=self.process.shutdown, name=f"standin-shutdown-{self.process.job_id}",
                             daemon=True).start()
        end_session(self.server, self.process.session)

    def _session_ended(self) -> None:
        """The launching session ended: its servants are closed (SessionI.cleanServants)."""
        if self.stopped:
            return
        self._stop()
        if self.server.adapter.find(self.identity) is self:
            current = Ice.Current()
            current.id = self.identity
            self.server.remove_servant(current)


@servant(omero.api.JobHandle, "JobHandle", void={"cancelJob", "close"})
class JobHandleService(StandInServant, omero.api.JobHandle):
    job = None

    def _job(self):
        if self.job is None:
            raise omero.ApiUsageException(message="JobHandle not ready: Please submit() or attach() to a Job.")
        return self.job

    def attach(self, jobId, current=None):
        job = self.server.store.get("ScriptJob", jobId)
        if job is None or job.getDetails().getOwner().getId().getValue() != self.session.user.id:
            raise omero.ApiUsageException(message=f"Unknown job:{jobId}")
        self.job = job
        return self.getJob(current=current).getStatus()

    def getJob(self, current=None):
        return _copy_job(self._job())

    def jobStatus(self, current=None):
        return self.getJob(current=current).getStatus()

    def jobMessage(self, current=None):
        return self._job().getMessage().getValue()

    def jobRunning(self, current=None):
        return self._job().getStatus().getValue().getValue() == "Running"

    def jobError(self, current=None):
        return self._job().getStatus().getValue().getValue() == "Error"

    def jobFinished(self, current=None):
        return self._job().getFinished()

    def cancelJob(self, current=None):
        set_job_status(self.server, self._job(), "Cancelled")
        process = self.server.jobs.get(self.job.getId().getValue())
        if process is not None and self.server.cancel_job_signals:
            process.cancel()

    def setStatus(self, status, current=None):
        return set_job_status(self.server, self._job(), status)

    def setMessage(self, message, current=None):
        return set_job_status(self.server, self._job(), message=message)

    def setStatusAndMessage(self, status, message, current=None):
        return set_job_status(self.server, self._job(), status, omero.rtypes.unwrap(message))

    def close(self, current=None):
        self.server.remove_servant(current)
