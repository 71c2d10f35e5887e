"""Progress of a run over one or more plates, as one short line.

A script job on the server can only tell a waiting client how it is doing through
OMERO itself (its job's message), so the line is written for both readers: a person
sees ``running: wells 6/48, fields 12/96, errors 0, elapsed 3.2 s, plate 1/2`` and
:meth:`Progress.parse` reads it back. When the run ends the line becomes its
outcome: ``finished: ...``, ``failed: ...`` or ``cancelled: ...``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from openhcs_omero_lib.execution.executor import Cancelled

MESSAGE_LIMIT = 255
"""OMERO keeps a job's message in a short string column; stay within it."""

OUTCOMES = ("finished", "failed", "cancelled")

PUBLISH_STEP = 0.01
"""A job's published progress is rewritten when the run has advanced this fraction
of its fields since the last write..."""
PUBLISH_EVERY = 10.0
"""...and otherwise no more often than this many seconds."""

_LINE = re.compile(
    r"^running: wells (\d+)/(\d+), fields (\d+)/(\d+), errors (\d+), elapsed ([\d.]+) s, plate (\d+)/(\d+)$")


@dataclass(frozen=True)
class Progress:
    wells_done: int
    wells_total: int
    fields_done: int
    fields_total: int
    errors: int
    elapsed: float
    plate: int = 1
    plates: int = 1

    @property
    def remaining(self) -> float | None:
        """Seconds left at the rate so far; None before the first field is done."""
        if self.fields_done == 0:
            return None
        return self.elapsed / self.fields_done * (self.fields_total - self.fields_done)

    def text(self) -> str:
        return (f"running: wells {self.wells_done}/{self.wells_total}, fields {self.fields_done}/"
                f"{self.fields_total}, errors {self.errors}, elapsed {self.elapsed:.1f} s, "
                f"plate {self.plate}/{self.plates}")

    @classmethod
    def parse(cls, text: str | None) -> Progress | None:
        m = _LINE.match(text or "")
        if m is None:
            return None
        g = m.groups()
        return cls(int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), float(g[5]), int(g[6]), int(g[7]))


def worth_publishing(latest: Progress, sent: Progress | None, seconds_since_sent: float) -> bool:
    """Whether ``latest`` should replace ``sent`` as the job's message. Each write of
    the message is an event and an event-log row on the server, so a write waits for
    :data:`PUBLISH_STEP` of the fields or :data:`PUBLISH_EVERY` seconds."""
    if sent is None:
        return True
    if latest == sent:
        return False
    if latest.fields_done - sent.fields_done >= PUBLISH_STEP * latest.fields_total:
        return True
    return seconds_since_sent >= PUBLISH_EVERY


def outcome_text(outcome: str, message: str) -> str:
    """The final line: ``<outcome>: <message>``, cut to what OMERO keeps."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    text = f"{outcome}: {' '.join(message.split())}"
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT - 3] + "..."


def parse_outcome(text: str | None) -> tuple[str, str] | None:
    """``(outcome, message)`` of a final line, else None."""
    head, sep, rest = (text or "").partition(": ")
    return (head, rest) if sep and head in OUTCOMES else None


class RunProgress:
    """Turns the executor's per-plate callbacks ``(done, total, errors)`` into
    whole-run :class:`Progress` handed to ``publish``; raises :class:`Cancelled`
    from the callback (so in the executor's loop, which then stops its workers)
    once ``should_stop()`` says so.

    ``plates`` holds ``(wells, fields)`` of each plate in run order.
    """

    def __init__(self, plates: Sequence[tuple[int, int]], publish: Callable[[Progress], None],
                 should_stop: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic):
        self.plates = list(plates)
        self.publish = publish
        self.should_stop = should_stop
        self.clock = clock
        self.started = clock()
        self._finished_wells = self._finished_fields = self._finished_errors = 0

    def plate_callback(self, index: int) -> Callable[[int, int, int], None]:
        """The callback for the ``index``-th plate (0-based); call in run order."""
        wells, fields = self.plates[index]

        def update(done: int, total: int, errors: int) -> None:
            if self.should_stop():
                raise Cancelled("the job was cancelled")
            plate_wells = done * wells // total if total else wells
            self.publish(Progress(
                self._finished_wells + plate_wells, sum(w for w, _ in self.plates),
                self._finished_fields + done, sum(f for _, f in self.plates),
                self._finished_errors + errors, self.clock() - self.started, index + 1, len(self.plates)))
            if total and done == total:
                self._finished_wells += wells
                self._finished_fields += fields
                self._finished_errors += errors
        return update
