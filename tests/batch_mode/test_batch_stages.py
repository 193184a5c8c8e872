"""Single-call stages in batch mode, over real HTTP to the fake server's /v1/files and
/v1/batches and a real DuckDB file: the same rows as online at half the price, `auto` mode's
choice, the judge and diversify, and jobs that time out, come back malformed or lose their
output file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from flows.runner import run_stage_async
from tests.batch_mode.helpers import batch_config
from tests.fake_llm import FakeLlm, Rule
from tests.fake_llm_batches import JobPlan
from tests.filter_trajectories.samples import make_task, make_trajectory
from tests.synthesize.seed import fake_settings, seed_servers
from toucan.records import BatchJob, Event, Run, Task, TaskRating, TrajectoryRating
from toucan.store import Store

SEED = 4
ITEMS = 12


def run(stage: str, config: Path, store: Store, **params: Any) -> Any:
    return asyncio.run(run_stage_async(stage, fake_settings(config), store, **params))


def synthesize_and_filter(
    tmp_path: Path, fake_llm: FakeLlm, mode: str, provider: str = "openai"
) -> tuple[Store, Any, Any]:
    folder = tmp_path / mode
    folder.mkdir()
    store = Store(folder / "s.duckdb")
    seed_servers(store)
    config = batch_config(folder / "toucan.yaml", fake_llm.base_url, mode=mode, provider=provider)
    made = run("synthesize", config, store, limit=ITEMS, seed=SEED)
    rated = run("filter_tasks", config, store)
    return store, made, rated


def kept_ids(store: Store) -> list[str]:
    return sorted(rating.task_id for rating in store.select(TaskRating, "keep"))


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_synthesize_and_filter_tasks_in_batch_mode_keep_the_online_tasks_at_half_the_price(
    tmp_path: Path, fake_llm: FakeLlm, provider: str
) -> None:
    online_store, online_made, online_rated = synthesize_and_filter(
        tmp_path, fake_llm, "online", provider
    )
    assert fake_llm.batches.counts.jobs_created == 0
    online_calls = fake_llm.calls.total

    batch_store, made, rated = synthesize_and_filter(tmp_path, fake_llm, "batch", provider)

    counts = fake_llm.batches.counts
    # one job per deployment and stage: every item of a stage waits for the others
    assert counts.jobs_created == len(made.by_generator) + 1
    # every task is judged but a near-duplicate one (Anthropic drops the `seed` that sets the
    # fake generator's tasks apart)
    assert rated.rated == online_rated.rated >= ITEMS - 1
    assert counts.requests_received == ITEMS + rated.rated
    assert fake_llm.calls.total - online_calls == ITEMS + rated.rated  # every call in a job
    assert 0 < len(kept_ids(batch_store)) < ITEMS  # the judge keeps some and not others
    assert kept_ids(batch_store) == kept_ids(online_store)
    tasks = {t.task_id: t for t in batch_store.select(Task)}
    online_tasks = {t.task_id: t for t in online_store.select(Task)}
    assert tasks.keys() == online_tasks.keys()
    for task_id, task in tasks.items():
        assert task.question == online_tasks[task_id].question
        assert task.usage == online_tasks[task_id].usage
        assert task.cost_usd == pytest.approx(online_tasks[task_id].cost_usd / 2)
    for summary, online in ((made, online_made), (rated, online_rated)):
        assert summary.spent_usd == pytest.approx(online.spent_usd / 2, rel=1e-3)
        assert summary.tokens_in == online.tokens_in > 0
    assert {job.status for job in batch_store.select(BatchJob)} == {"completed"}


def test_a_batch_reply_that_does_not_parse_is_repaired_online_as_after_an_online_call(
    tmp_path: Path, fake_llm: FakeLlm
) -> None:
    store = Store(tmp_path / "s.duckdb")
    seed_servers(store)
    config = batch_config(tmp_path / "toucan.yaml", fake_llm.base_url)
    fake_llm.script([Rule(times=1, text="Here is a lovely task for you.")])  # one line: prose

    summary = run("synthesize", config, store, limit=4, seed=SEED)

    assert summary.by_status == {"ok": 4}
    assert fake_llm.batches.counts.requests_received == 4
    assert fake_llm.calls.total == 5  # four lines in the job, one online repair
    prose = {"role": "assistant", "content": "Here is a lovely task for you."}
    repairs = [r for r in fake_llm.requests if prose in r["messages"]]
    assert len(repairs) == 1 and repairs[0]["messages"][-2] == prose


@pytest.mark.parametrize(("min_items", "batched"), [(ITEMS - 1, True), (ITEMS, False)])
def test_auto_mode_sends_jobs_only_above_batch_min_items(
    tmp_path: Path, fake_llm: FakeLlm, min_items: int, batched: bool
) -> None:
    store = Store(tmp_path / "s.duckdb")
    seed_servers(store)
    config = batch_config(
        tmp_path / "toucan.yaml", fake_llm.base_url, mode="auto", min_items=min_items
    )
    summary = run("synthesize", config, store, limit=ITEMS, seed=SEED)
    assert summary.by_status == {"ok": ITEMS}
    assert fake_llm.batches.counts.requests_received == (ITEMS if batched else 0)


def test_batch_mode_on_deployments_without_a_batch_api_stays_online_and_says_so(
    tmp_path: Path, fake_llm: FakeLlm, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "s.duckdb")
    seed_servers(store)
    config = batch_config(tmp_path / "toucan.yaml", fake_llm.base_url)
    settings = fake_settings(config)
    models = settings.models.model_copy(
        update={
            group: [d.model_copy(update={"supports_batch": False}) for d in deployments]
            for group in ("generators", "teachers", "judge")
            if (deployments := getattr(settings.models, group))
        }
    )
    settings = settings.model_copy(update={"models": models})
    summary = asyncio.run(run_stage_async("synthesize", settings, store, limit=3, seed=SEED))
    assert summary.by_status == {"ok": 3}
    assert fake_llm.batches.counts.jobs_created == 0 and fake_llm.calls.total == 3
    assert "no configured deployment has a batch API" in caplog.text


def test_the_trajectory_judge_and_diversify_write_their_rows_in_batch_mode(
    tmp_path: Path, fake_llm: FakeLlm
) -> None:
    store = Store(tmp_path / "s.duckdb")
    config = batch_config(tmp_path / "toucan.yaml", fake_llm.base_url)
    tasks = [make_task(question=f"What is {i}*7?") for i in range(5)]
    calls = [("calculate", {"expression": "6*7"}, "42", False)]
    store.insert([*tasks, *(make_trajectory(task, calls) for task in tasks)])

    judged = run("filter_trajectories", config, store)
    ratings = store.select(TrajectoryRating)
    assert len(ratings) == 5 and {r.status for r in ratings} == {"ok"}
    assert judged.cost_usd > 0 and not judged.by_reason.get("error")
    assert fake_llm.batches.counts.requests_received == 5

    seed_servers(store)
    made = run("synthesize", config, store, limit=3, seed=SEED)
    rated = run("filter_tasks", config, store)
    assert made.by_status == {"ok": 3} and rated.kept >= 1
    before = fake_llm.batches.counts.requests_received
    varied = run("diversify", config, store, variants=1)
    variants = store.select(Task, "kind = 'diversified'")
    assert variants and {v.status for v in variants} == {"ok"}
    assert varied.by_status == {"ok": len(variants)}
    assert fake_llm.batches.counts.requests_received - before == len(variants)
    assert all(v.cost_usd > 0 for v in variants)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("plan", "jobs", "reason"),
    [
        (JobPlan(hold=True), {"max_wait_s": 1.0, "cancel_wait_s": 2.0}, "batch_timeout"),
        (JobPlan(malformed_lines=ITEMS), {}, "batch_malformed_line"),
        (JobPlan(missing_output=True), {}, "batch_output_missing"),
    ],
)
def test_a_job_that_times_out_comes_back_malformed_or_loses_its_output_gives_error_rows(
    tmp_path: Path,
    fake_llm: FakeLlm,
    plan: JobPlan,
    jobs: dict[str, float],
    reason: str,
    provider: str,
) -> None:
    store = Store(tmp_path / "s.duckdb")
    seed_servers(store)
    config = batch_config(tmp_path / "toucan.yaml", fake_llm.base_url, jobs=jobs, provider=provider)
    fake_llm.batches.plan([], default=plan)

    summary = run("synthesize", config, store, limit=ITEMS, seed=SEED)

    rows = store.select(Task)
    assert len(rows) == ITEMS
    assert {(row.status, row.reason) for row in rows} == {("error", reason)}
    assert summary.by_reason == {reason: ITEMS}
    errors = store.select(Event, "kind = 'llm_call' AND status = 'error'")
    assert {event.error_class for event in errors} == {reason}
    (run_row,) = store.select(Run, "run_id = ?", [summary.run_id])
    assert run_row.summary["outcome"]["state"] == "CompletedWithErrors"  # not green
    assert reason in run_row.summary["outcome"]["message"]
