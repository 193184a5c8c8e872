"""How a run ends: Completed, CompletedWithErrors (with the counts) or NothingProduced; the
pipeline sums its stages' outcomes, and a stage that produced nothing is run again."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import yaml

from flows.completion import explain_incomplete
from flows.outcome import ErrorCounts, combine_outcomes, count_run_errors, judge_outcome
from flows.pipeline import pipeline
from toucan.records import Server, Task, TaskRating, Trajectory
from toucan.store import Store

TINY = Path(__file__).resolve().parents[1] / "servers" / "tiny_server.py"


def test_error_rows_are_split_into_retryable_final_and_given_up(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    mine, other = "run-mine", "run-other"
    store.insert(
        [
            TaskRating(rating_id="a", task_id="a", judge="j", status="error",
                       reason="model_server_error", run_id=mine),
            TaskRating(rating_id="b", task_id="b", judge="j", status="error",
                       reason="rate_limited", attempts=3, run_id=mine),
            TaskRating(rating_id="c", task_id="c", judge="j", status="error",
                       reason="score_out_of_range", run_id=mine),
            TaskRating(rating_id="d", task_id="d", judge="j", run_id=mine),
            TaskRating(rating_id="e", task_id="e", judge="j", status="error",
                       reason="model_server_error", run_id=other),
            Trajectory(trajectory_id="t", task_id="a", teacher="T", status="error",
                       reason="server_paused", run_id=mine),
            Task(task_id="k", strategy="single_server", status="error", reason="model_timeout",
                 attempts=2, run_id=mine),
        ]
    )  # fmt: skip
    counts = count_run_errors(store, mine, max_attempts=3)
    assert (counts.errored, counts.retryable, counts.final, counts.given_up) == (5, 3, 1, 1)
    assert counts.by_reason == {
        "model_server_error": 1,
        "model_timeout": 1,
        "rate_limited": 1,
        "score_out_of_range": 1,
        "server_paused": 1,
    }
    assert count_run_errors(store, mine, max_attempts=2).given_up == 2


def test_the_outcome_names_errors_first_then_nothing_produced() -> None:
    errors = ErrorCounts(errored=3, retryable=2, final=1, by_reason={"rate_limited": 2, "x": 1})
    with_errors = judge_outcome(10, 7, errors, {})
    assert with_errors.state == "CompletedWithErrors"
    assert with_errors.message.startswith(
        "items_errored: 3 (retryable 2; final 1; given up 0); reasons: rate_limited 2, x 1"
    )
    rejected = judge_outcome(20, 0, ErrorCounts(), {"crashed_at_start": 19, "missing_command": 1})
    assert rejected.state == "NothingProduced"
    assert rejected.message == (
        "nothing_produced: 0 of 20 planned ok; reasons: crashed_at_start 19, missing_command 1"
    )
    assert judge_outcome(0, 0, ErrorCounts(), {}).state == "Completed"  # nothing to do
    assert judge_outcome(5, 5, ErrorCounts(), {}).clean


def test_the_pipeline_outcome_sums_its_stages() -> None:
    clean = judge_outcome(4, 4, ErrorCounts(), {})
    judged = judge_outcome(6, 3, ErrorCounts(errored=3, retryable=3), {})
    ran = judge_outcome(2, 1, ErrorCounts(errored=1, final=1), {})
    combined = combine_outcomes({"synthesize": clean, "filter_tasks": judged, "trajectories": ran})
    assert combined.state == "CompletedWithErrors"
    assert combined.message.startswith(
        "items_errored: 4 (retryable 3; final 1; given up 0) in filter_tasks, trajectories."
    )
    assert combine_outcomes({"synthesize": clean}).state == "Completed"


@pytest.mark.usefixtures("prefect_harness")
def test_every_server_rejected_at_onboard_ends_nothing_produced_and_is_run_again(
    tmp_path: Path,
) -> None:
    crash = {"name": "crashes", "command": sys.executable, "args": [str(TINY), "--mode", "crash"]}
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"servers": [crash, {"name": "no-command"}]}))
    config = tmp_path / "toucan.yaml"
    config.write_text(yaml.safe_dump({"onboard": {"retries": 0}}))
    store = Store(tmp_path / "s.duckdb")
    state = asyncio.run(
        pipeline(
            stages=["onboard"],
            store=str(store.path),
            config=str(config),
            stage_params={"onboard": {"catalogs": [str(catalog)]}},
            return_state=True,
        )
    )
    assert (state.type.value, state.name) == ("COMPLETED", "NothingProduced")
    assert state.message.startswith(
        "nothing_produced in onboard. onboard: nothing_produced: 0 of 2"
    )
    assert {s.status for s in store.select(Server)} == {"rejected"}
    assert explain_incomplete(store, "onboard") == "last_run_nothing_produced"
