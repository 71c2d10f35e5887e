"""The progress line a running job publishes, and whole-run progress over several plates."""

from __future__ import annotations

import pytest

from openhcs_omero_lib.execution.executor import Cancelled
from openhcs_omero_lib.execution.progress import (
    MESSAGE_LIMIT,
    Progress,
    RunProgress,
    outcome_text,
    parse_outcome,
    worth_publishing,
)


def test_progress_line_reads_back():
    p = Progress(6, 48, 12, 96, 1, 3.25, 1, 2)
    assert p.text() == "running: wells 6/48, fields 12/96, errors 1, elapsed 3.2 s, plate 1/2"
    back = Progress.parse(p.text())
    assert back == Progress(6, 48, 12, 96, 1, 3.2, 1, 2)
    assert back.remaining == pytest.approx(3.2 / 12 * 84)
    assert Progress(0, 48, 0, 96, 0, 1.0).remaining is None
    assert Progress.parse("finished: done") is None and Progress.parse(None) is None


def test_outcome_line_is_cut_to_what_omero_keeps():
    long = "plate 1: " + "x" * 500
    text = outcome_text("finished", long)
    assert len(text) == MESSAGE_LIMIT and text.endswith("...")
    assert parse_outcome(text)[0] == "finished"
    assert parse_outcome(outcome_text("failed", "Nothing attached:\n  no Plate with ID 9")) == \
        ("failed", "Nothing attached: no Plate with ID 9")
    assert parse_outcome("running: wells 1/2") is None and parse_outcome("") is None
    with pytest.raises(ValueError):
        outcome_text("done", "x")


def test_run_progress_adds_up_plates_in_order():
    seen = []
    clock = iter([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).__next__
    run = RunProgress([(4, 8), (2, 4)], seen.append, clock=clock)
    first, second = run.plate_callback(0), run.plate_callback(1)
    first(4, 8, 1)
    first(8, 8, 1)
    second(2, 4, 0)
    second(4, 4, 2)
    assert [(p.wells_done, p.fields_done, p.errors, p.plate) for p in seen] == [
        (2, 4, 1, 1), (4, 8, 1, 1), (5, 10, 1, 2), (6, 12, 3, 2)]
    assert all(p.wells_total == 6 and p.fields_total == 12 and p.plates == 2 for p in seen)
    assert [p.elapsed for p in seen] == [1.0, 2.0, 3.0, 4.0]


def test_run_progress_raises_cancelled_when_asked_to_stop():
    stop = {"now": False}
    run = RunProgress([(2, 2)], lambda p: None, should_stop=lambda: stop["now"])
    callback = run.plate_callback(0)
    callback(1, 2, 0)
    stop["now"] = True
    with pytest.raises(Cancelled):
        callback(2, 2, 0)


def test_progress_is_worth_publishing_on_one_percent_or_after_ten_seconds():
    sent = Progress(10, 100, 20, 400, 0, 5.0)
    assert worth_publishing(sent, None, 0.0)  # the first one
    assert not worth_publishing(sent, sent, 60.0)  # nothing new
    small = Progress(10, 100, 23, 400, 1, 6.0)  # 3 of 400 fields: under 1%
    assert not worth_publishing(small, sent, 9.9)
    assert worth_publishing(small, sent, 10.0)
    assert worth_publishing(Progress(11, 100, 24, 400, 0, 5.5), sent, 0.5)  # 4 of 400: 1%
    assert worth_publishing(Progress(1, 1, 1, 2, 0, 0.1), Progress(0, 1, 0, 2, 0, 0.0), 0.0)
