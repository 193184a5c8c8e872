"""Errored items are retried by the next run, on the Prefect test server: the fake model answers
HTTP 500 for some tasks, the run ends `CompletedWithErrors` with the counts in its message,
and the next run sends exactly the failed items again; an item that fails as often as
`retries.max_attempts` is given up, not retried forever."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from flows.pipeline import pipeline
from flows.registry import filter_tasks_flow
from flows.runner import run_stage_async
from tests.fake_llm import FakeLlm, Rule
from tests.synthesize.seed import JUDGE, competent_model, fake_settings, write_config
from toucan.records import Run, Task, TaskRating
from toucan.store import Store

pytestmark = pytest.mark.usefixtures("prefect_harness")


def synthesize(config: Path, store: Store, limit: int) -> list[Task]:
    settings = fake_settings(config)
    asyncio.run(run_stage_async("synthesize", settings, store, limit=limit, seed=0))
    return store.select(Task, "status = 'ok' ORDER BY task_id")


def failing_judge(questions: set[str]) -> Any:
    """The judge answers HTTP 500 for the tasks asking these questions, 5s for the others."""

    def answer(request: dict[str, Any]) -> Any:
        conversation = json.dumps(request["messages"])
        if request.get("model") == JUDGE and any(
            json.dumps(q)[1:-1] in conversation for q in questions
        ):
            return Rule(status=500, text="upstream exploded")
        return competent_model(request)

    return answer


def run_pipeline(store: Store, config: Path) -> Any:
    return asyncio.run(
        pipeline(
            stages=["filter_tasks"], store=str(store.path), config=str(config), return_state=True
        )
    )


def test_a_pipeline_with_failed_judge_calls_ends_with_errors_and_the_next_retries_only_those(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    tasks = synthesize(config_path, store, 6)
    failing = tasks[:3]
    fake_llm.default = failing_judge({t.question for t in failing})

    first = run_pipeline(store, config_path)
    assert (first.type.value, first.name) == ("COMPLETED", "CompletedWithErrors")
    assert first.message.startswith("items_errored: 3 (retryable 3; final 0; given up 0)")
    [stage] = first.result().outcomes
    assert (stage.state, stage.outcome) == ("CompletedWithErrors", "ran")
    errors = store.select(TaskRating, "status = 'error'")
    assert {r.task_id for r in errors} == {t.task_id for t in failing}
    assert {(r.reason, r.attempts) for r in errors} == {("model_server_error", 1)}
    [run] = store.select(Run, "stage = 'filter_tasks'")
    assert run.status == "completed" and run.summary["outcome"]["errors"]["retryable"] == 3

    fake_llm.default = competent_model
    fake_llm.reset()
    second = run_pipeline(store, config_path)
    assert second.name == "Completed"
    assert fake_llm.calls.total == 3  # exactly the three that failed
    ratings = {r.task_id: r for r in store.select(TaskRating)}
    assert all(r.status == "ok" for r in ratings.values()) and len(ratings) == 6
    assert {ratings[t.task_id].attempts for t in failing} == {2}
    assert {ratings[t.task_id].attempts for t in tasks[3:]} == {1}

    fake_llm.reset()
    third = run_pipeline(store, config_path)
    assert third.name == "Completed"
    assert [o.outcome for o in third.result().outcomes] == ["skipped_complete"]
    assert fake_llm.calls.total == 0


def test_an_item_failing_as_often_as_the_attempt_limit_is_given_up(
    tmp_path: Path, store: Store, fake_llm: FakeLlm
) -> None:
    config = write_config(tmp_path / "two.yaml", fake_llm.base_url, retries={"max_attempts": 2})
    tasks = synthesize(config, store, 4)
    fake_llm.default = failing_judge({tasks[0].question})

    def rate() -> Any:
        return filter_tasks_flow(store=str(store.path), config=str(config), return_state=True)

    first = rate()
    assert first.name == "CompletedWithErrors"
    assert first.message.startswith("items_errored: 1 (retryable 1; final 0; given up 0)")
    second = rate()
    assert second.name == "CompletedWithErrors"
    assert second.message.startswith("items_errored: 1 (retryable 0; final 0; given up 1)")
    assert second.result().rated == 1
    fake_llm.reset()
    third = rate()
    assert third.name == "Completed" and third.result().rated == 0
    assert fake_llm.calls.total == 0  # given up: not sent again
    [given_up] = store.select(TaskRating, "status = 'error'")
    assert (given_up.task_id, given_up.attempts) == (tasks[0].task_id, 2)
