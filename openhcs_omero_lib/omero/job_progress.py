"""A running script's progress, published as the message of its own job.

OMERO uploads a script's stdout only when it ends, but every script job has a
message that its user can set and read through ``JobHandle`` from any session. The
script's ID of its job arrives as the ``omero.job`` property. Publishing happens in a
background thread that looks every ``interval``: the executor's loop only hands over
the latest :class:`~..progress.Progress`, so progress costs the run no waiting. Every
write of the message is an event and an event-log row on the server, so the thread
writes only when the run has advanced 1% of its fields, or every 10 s for smaller
changes (:func:`~..progress.worth_publishing`), and the outcome at the end. The same
thread reads the job's status (a read writes nothing), so a job cancelled by ID
(``JobHandle.cancelJob``, from ``openhcs-omero cancel``) is noticed within an
interval even where the server does not signal the script.
"""

from __future__ import annotations

import sys
import threading
import time

from openhcs_omero_lib.execution.progress import Progress, outcome_text, worth_publishing


class JobMessagePublisher:
    """See the module docstring. Without a job (a script run outside the Processor,
    a test calling the script's function directly) it does nothing."""

    def __init__(self, client, interval: float = 0.5):
        self.interval = interval
        self.cancelled = False
        self.updates = 0
        self._latest: Progress | None = None
        self._sent: Progress | None = None
        self._sent_at = 0.0
        self._stop = threading.Event()
        self._handle = None
        self._thread: threading.Thread | None = None
        job = client.getProperty("omero.job") if client is not None else ""
        if not job:
            return
        try:
            self._handle = client.getSession().createJobHandle()
            self._handle.attach(int(job))
        except Exception as exc:  # progress is a courtesy: the run goes on without it
            print(f"openhcs-omero: no progress for job {job}: {getattr(exc, 'message', None) or exc}",
                  file=sys.stderr)
            self._handle = None
            return
        self._thread = threading.Thread(target=self._loop, name="openhcs-job-progress", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        return self._handle is not None

    def publish(self, progress: Progress) -> None:
        self._latest = progress

    def should_stop(self) -> bool:
        return self.cancelled

    def request_stop(self) -> None:
        """Stop at the next progress update (safe to call from a signal handler)."""
        self.cancelled = True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._send_latest()
                status = self._handle.jobStatus().getValue().getValue()
                self.cancelled = self.cancelled or status == "Cancelled"
            except Exception as exc:  # e.g. the session ended: stop publishing, keep running
                print(f"openhcs-omero: progress publishing stopped: {getattr(exc, 'message', exc)}",
                      file=sys.stderr)
                return

    def _send_latest(self) -> None:
        latest, now = self._latest, time.monotonic()
        if latest is not None and worth_publishing(latest, self._sent, now - self._sent_at):
            self._handle.setMessage(latest.text())
            self._sent, self._sent_at = latest, now
            self.updates += 1

    def finish(self, outcome: str, message: str) -> None:
        """Stop publishing and leave the outcome as the job's message."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)
        if self._handle is None:
            return
        try:
            self._handle.setMessage(outcome_text(outcome, message))
            self._handle.close()
        except Exception as exc:
            print(f"openhcs-omero: could not record the outcome: {getattr(exc, 'message', exc)}", file=sys.stderr)
        self._handle = None
