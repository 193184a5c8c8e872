"""Progress off a terminal: plain lines, a stage's first and last update and one now and
then, each with the seconds since the stage started."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from cli.progress_view import LineHandler
from toucan.progress import PROGRESS_LOGGER, report_progress


@pytest.fixture
def line_handler() -> Iterator[LineHandler]:
    handler = LineHandler(every_s=3600.0)
    PROGRESS_LOGGER.addHandler(handler)
    PROGRESS_LOGGER.setLevel(logging.INFO)
    yield handler
    PROGRESS_LOGGER.removeHandler(handler)


def test_a_stage_prints_its_start_and_its_end_but_not_every_item(
    line_handler: LineHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    report_progress("synthesize", 0, 4)
    for done in range(1, 5):
        report_progress("synthesize", done, 4, "single_server", "ok")
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["synthesize", "0/4"], ["synthesize", "4/4"]]
    assert lines[-1].endswith("s") and "(single_server ok)" in lines[-1]


def test_a_line_is_printed_when_the_interval_has_passed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = LineHandler(every_s=0.0)
    PROGRESS_LOGGER.addHandler(handler)
    try:
        for done in range(4):
            report_progress("judge", done, 10)
    finally:
        PROGRESS_LOGGER.removeHandler(handler)
    assert len(capsys.readouterr().err.strip().splitlines()) == 4
