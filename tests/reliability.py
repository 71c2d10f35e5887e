"""The counted reliability suite: what each case is, what it measured, and the
summary line printed at the end of every run that includes such cases.

A case is a test marked ``@pytest.mark.reliability(kind)``, ``kind`` one of
:data:`KINDS`. Its outcome counts it: a ``bad_input`` that passes was refused
cleanly (one clear message, a non-zero status or failed ``Message``, nothing
written or attached), a ``fault`` that passes was survived. Cases record what they
measured with :func:`record` *before* asserting on it, so that a failing case still
adds its figures: ``lost`` (earlier results missing or changed), ``orphaned``
(processes, files or server-side objects left behind), ``secrets`` (a password or
session key found in a text), ``texts`` (texts searched for secrets).

``tests/conftest.py`` imports the two hooks below; nothing else of pytest's
machinery is used, so the summary is the same with ``-m reliability`` or without.
"""

from __future__ import annotations

import collections

import pytest

KINDS = ("bad_input", "fault", "secrets", "soak")
FIGURES = ("lost", "orphaned", "secrets", "texts")
PROPERTY = "reliability"


def record(request: pytest.FixtureRequest, **figures: int) -> None:
    """Add measured figures (:data:`FIGURES`) to the running case."""
    unknown = set(figures) - set(FIGURES)
    if unknown:
        raise ValueError(f"unknown reliability figures: {sorted(unknown)}")
    request.node.user_properties.append((PROPERTY, dict(figures)))


class Tally:
    """Cases by kind and outcome, and the figures they recorded."""

    def __init__(self):
        self._kind: dict[str, str] = {}
        self._outcome: dict[str, str] = {}
        self._figures: dict[str, list] = {}
        self._soaks: dict[str, list] = {}

    def collected(self, items) -> None:
        for item in items:
            marker = item.get_closest_marker("reliability")
            if marker is None:
                continue
            kind = marker.args[0] if marker.args else marker.kwargs.get("kind")
            if kind not in KINDS:
                raise pytest.UsageError(f"{item.nodeid}: reliability kind must be one of {KINDS}, not {kind!r}")
            self._kind[item.nodeid] = kind

    def report(self, report) -> None:
        """Setup, call and teardown of a case: skipped or failed in any phase is its
        outcome, else passed; its figures are those recorded by the end."""
        if report.nodeid not in self._kind:
            return
        if report.skipped:
            self._outcome[report.nodeid] = "skipped"
        elif report.failed:
            self._outcome[report.nodeid] = "failed"
        elif report.when == "call":
            self._outcome.setdefault(report.nodeid, "passed")
        self._figures[report.nodeid] = [v for name, v in report.user_properties if name == PROPERTY]
        self._soaks[report.nodeid] = [v for name, v in report.user_properties if name == SOAK]

    @property
    def cases(self) -> dict[str, collections.Counter]:
        counts = {k: collections.Counter() for k in KINDS}
        for nodeid, outcome in self._outcome.items():
            counts[self._kind[nodeid]][outcome] += 1
        return counts

    @property
    def figures(self) -> collections.Counter:
        total: collections.Counter = collections.Counter({name: 0 for name in FIGURES})
        for recorded in self._figures.values():
            for figures in recorded:
                total.update(figures)
        return total

    @property
    def empty(self) -> bool:
        return not self._outcome

    def line(self) -> str:
        cases, figures = self.cases, self.figures

        def tried(kind: str) -> int:
            return cases[kind]["passed"] + cases[kind]["failed"]

        parts = [f"bad inputs {tried('bad_input')} tried, {cases['bad_input']['passed']} refused cleanly",
                 f"faults {tried('fault')} injected, {cases['fault']['passed']} survived",
                 f"objects lost {figures['lost']}, orphaned {figures['orphaned']}",
                 f"secrets found {figures['secrets']} in {figures['texts']} texts searched"]
        if tried("secrets"):
            parts[-1] += f" ({cases['secrets']['passed']} of {tried('secrets')} secrets cases passed)"
        if tried("soak"):
            parts.append(f"soak {cases['soak']['passed']} of {tried('soak')} passed")
        skipped = sum(c["skipped"] for c in cases.values())
        if skipped:
            parts.append(f"{skipped} skipped")
        return "reliability: " + "; ".join(parts)

    def soak_lines(self) -> list[str]:
        lines = []
        for nodeid, soaks in sorted(self._soaks.items()):
            for soak in soaks:
                changes = ", ".join(f"{k} {soak['before'][k]} -> {soak['after'][k]}" for k in soak["before"])
                lines.append(f"soak {nodeid.rsplit('::', 1)[-1]}: {soak['runs']} runs: {changes}")
        return lines


TALLY = Tally()
"""One per test session (pytest runs one session per process)."""


def pytest_collection_modifyitems(session, config, items) -> None:
    TALLY.collected(items)


def pytest_runtest_logreport(report) -> None:
    TALLY.report(report)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if TALLY.empty:
        return
    terminalreporter.write_sep("=", "reliability")
    terminalreporter.write_line(TALLY.line())
    for line in TALLY.soak_lines():
        terminalreporter.write_line(line)


# ---- guards every counted case runs under ------------------------------------------------------

class DeadlineExceeded(Exception):
    """A counted case ran past its deadline (a hang is a failure, never a wait)."""


def _expired(signum, frame):
    raise DeadlineExceeded("the case ran past its deadline")


@pytest.fixture(autouse=True)
def reliability_guard(request):
    """For a counted case: a deadline (``@pytest.mark.reliability(kind, deadline=s)``,
    default 120 s: SIGALRM raises in the test, and a stack dump ends the process a
    minute later if even that is stuck), and no process of its own left running at
    the end (counted as orphaned, then killed)."""
    import faulthandler
    import signal

    import psutil

    marker = request.node.get_closest_marker("reliability")
    if marker is None:
        yield
        return
    seconds = float(marker.kwargs.get("deadline", 120))
    # multiprocessing's resource tracker serves every later pool of this process and
    # ends with it: started now, it is not the case's
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(seconds + 60, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()
    left = [p for p in me.children(recursive=True) if p.pid not in before]
    _, alive = psutil.wait_procs(left, timeout=10)
    record(request, orphaned=len(alive))
    described = []
    for proc in alive:
        try:
            described.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.Error:
            pass
    assert not alive, f"processes left running: {described}"


SOAK = "reliability_soak"


def record_soak(request: pytest.FixtureRequest, runs: int, before: dict, after: dict) -> None:
    """A soak's measures before and after its runs, for the summary."""
    request.node.user_properties.append((SOAK, {"runs": runs, "before": before, "after": after}))
