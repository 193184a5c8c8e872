"""Batch jobs that go wrong, over real HTTP and a real store: expired and failed jobs, a job that
never ends, malformed result lines, a missing output file, and runs killed while a job is out."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_llm import FakeLlm, Rule
from tests.fake_llm_batches import JobPlan
from tests.llm.batch_helpers import (
    FAST,
    STAGE,
    Verdict,
    batch_models,
    judge_items,
    run_batch,
)
from toucan.errors import LlmError
from toucan.llm.batch_ledger import BatchLedger
from toucan.llm.batch_lines import make_custom_id
from toucan.llm.batch_runner import BatchRunner
from toucan.llm.replies import LlmReply
from toucan.llm.router import LlmRouter
from toucan.records import BatchJob, BatchRequest
from toucan.store import Store

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
EVENT_TIMEOUT_S = 120.0  # a cold interpreter importing LiteLLM on a busy 2-core box


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "toucan.duckdb")


def reasons(outcomes: dict[str, LlmReply | LlmError]) -> dict[str, str]:
    """item -> `ok` or the error's reason token."""
    return {
        item: "ok" if isinstance(outcome, LlmReply) else outcome.reason
        for item, outcome in outcomes.items()
    }


@pytest.mark.parametrize(
    ("outcome", "provider"),
    [("expired", "openai"), ("failed", "openai"), ("expired", "anthropic")],
)  # (a Message Batch never fails as a whole: Anthropic refuses a bad one at create)
async def test_an_ended_job_sends_only_the_items_it_never_ran_again(
    fake_llm: FakeLlm, store: Store, outcome: str, provider: str
) -> None:
    fake_llm.batches.plan([JobPlan(outcome=outcome, answered=2)])  # type: ignore[arg-type]
    models = batch_models(fake_llm, provider=provider)

    outcomes, _ = await run_batch(models, store, judge_items(5))

    assert set(reasons(outcomes).values()) == {"ok"}
    first, second = sorted(store.select(BatchJob), key=lambda job: job.attempt)
    assert (first.status, first.reason) == (outcome, f"batch_{outcome}")
    sent_again = 3 if outcome == "expired" else 5  # a failed job ran nothing
    assert second.resubmit_of == first.job_key and second.request_count == sent_again
    assert fake_llm.batches.counts.requests_received == 5 + sent_again
    assert fake_llm.calls.total == 5  # every item answered exactly once


@pytest.mark.parametrize("outcome", ["expired", "failed"])
async def test_items_still_unfinished_after_the_resubmits_become_errors(
    fake_llm: FakeLlm, store: Store, outcome: str
) -> None:
    every_job = JobPlan(outcome=outcome, answered=1)  # type: ignore[arg-type]
    fake_llm.batches.plan([], default=every_job)

    outcomes, events = await run_batch(batch_models(fake_llm), store, judge_items(4))

    found = reasons(outcomes)
    assert set(found.values()) == (
        {"ok", "batch_expired"} if outcome == "expired" else {"batch_failed"}
    )
    assert fake_llm.batches.counts.jobs_created == 1 + FAST.max_resubmits
    errors = [event for event in events if event.status == "error"]
    assert {event.error_class for event in errors} == {f"batch_{outcome}"}


async def test_a_job_that_never_ends_is_cancelled_and_its_items_fail_as_batch_timeout(
    fake_llm: FakeLlm, store: Store
) -> None:
    fake_llm.batches.plan([JobPlan(hold=True)])
    short = FAST.model_copy(update={"max_wait_s": 0.5})

    outcomes, _ = await run_batch(batch_models(fake_llm, short), store, judge_items(3))

    assert set(reasons(outcomes).values()) == {"batch_timeout"}
    (job,) = store.select(BatchJob)
    assert (job.status, job.reason) == ("cancelled", "batch_timeout")
    assert fake_llm.batches.counts.cancels == 1
    assert fake_llm.batches.counts.jobs_created == 1  # given up on, not sent again


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_malformed_result_lines_fail_only_their_items(
    fake_llm: FakeLlm, store: Store, provider: str
) -> None:
    fake_llm.batches.plan([JobPlan(malformed_lines=1)])
    models = batch_models(fake_llm, provider=provider)

    outcomes, _ = await run_batch(models, store, judge_items(3))

    assert sorted(reasons(outcomes).values()) == ["batch_malformed_line", "ok", "ok"]


async def test_a_missing_output_file_fails_the_items_it_held(
    fake_llm: FakeLlm, store: Store
) -> None:
    fake_llm.script([Rule(contains="number 0", status=400)])  # in the error file, which is there
    fake_llm.batches.plan([JobPlan(missing_output=True)])

    outcomes, _ = await run_batch(batch_models(fake_llm), store, judge_items(3))

    assert reasons(outcomes) == {
        "task_0": "batch_request_failed",
        "task_1": "batch_output_missing",
        "task_2": "batch_output_missing",
    }
    assert fake_llm.batches.counts.jobs_created == 1


async def test_a_killed_run_waits_for_its_recorded_job_and_never_sends_it_again(
    fake_llm: FakeLlm, store: Store
) -> None:
    fake_llm.batches.plan([JobPlan(hold=True)])
    models = batch_models(fake_llm)
    items = judge_items(3)

    killed = asyncio.create_task(run_batch(models, store, items, run_id="run_1"))
    # the job's id is stored before its first status check
    assert await asyncio.to_thread(fake_llm.batches.polled.wait, EVENT_TIMEOUT_S)
    killed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await killed
    (pending,) = BatchLedger(store).open_jobs(STAGE)
    assert pending.job_id is not None
    fake_llm.batches.release()

    outcomes, _ = await run_batch(models, store, items, run_id="run_2")

    assert set(reasons(outcomes).values()) == {"ok"}
    counts = fake_llm.batches.counts
    assert (counts.jobs_created, counts.requests_received, counts.files_uploaded) == (1, 3, 1)
    assert BatchLedger(store).open_jobs(STAGE) == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_resume_reads_a_killed_runs_open_job_and_returns_what_it_never_ran(
    fake_llm: FakeLlm, store: Store, provider: str
) -> None:
    fake_llm.batches.plan([JobPlan(hold=True, outcome="expired", answered=1)])
    models = batch_models(fake_llm, provider=provider)
    killed = asyncio.create_task(run_batch(models, store, judge_items(3), run_id="run_1"))
    assert await asyncio.to_thread(fake_llm.batches.polled.wait, EVENT_TIMEOUT_S)
    killed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await killed
    fake_llm.batches.release()

    router = LlmRouter(models)
    runner = BatchRunner(router, BatchLedger(store), run_id="run_2", stage=STAGE)
    outcomes, resend = await runner.resume()
    await router.aclose()

    assert reasons(outcomes) == {"task_0": "ok"}  # the one line the expired job answered
    answer = outcomes["task_0"]
    assert isinstance(answer, LlmReply) and Verdict.model_validate_json(answer.text).score == 1
    assert sorted(resend) == ["task_1", "task_2"]
    assert fake_llm.batches.counts.jobs_created == 1  # resume sends nothing
    assert BatchLedger(store).open_jobs(STAGE) == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_run_killed_before_it_stored_the_job_id_finds_the_job_by_its_key(
    fake_llm: FakeLlm, store: Store, tmp_path: Path, provider: str
) -> None:
    fake_llm.batches.plan([JobPlan(hold_create=True)])
    command = [sys.executable, "-m", "tests.llm.batch_helpers"]
    process = subprocess.Popen(
        [*command, fake_llm.base_url, str(store.path), "run_1", "3", provider], cwd=ROOT
    )
    try:
        created = await asyncio.to_thread(fake_llm.batches.job_created.wait, EVENT_TIMEOUT_S)
    finally:
        process.kill()
        process.wait()
    assert created
    fake_llm.batches.release_create()
    (pending,) = store.select(BatchJob)
    assert (pending.status, pending.job_id) == ("submitting", None)

    models = batch_models(fake_llm, provider=provider)
    outcomes, _ = await run_batch(models, store, judge_items(3), run_id="run_2")

    assert set(reasons(outcomes).values()) == {"ok"}
    assert fake_llm.batches.counts.jobs_created == 1
    assert fake_llm.batches.counts.lists >= 1
    (found,) = store.select(BatchJob)
    assert found.job_id is not None and found.status == "completed"


async def test_a_recorded_job_the_provider_does_not_know_is_lost_and_its_items_sent_again(
    fake_llm: FakeLlm, store: Store
) -> None:
    models = batch_models(fake_llm)
    items = judge_items(2)
    router = LlmRouter(models)
    name = "judge-a"
    keys = {item.item_id: router.request_key(name, item.request()).key for item in items}
    await router.aclose()
    gone = BatchJob(
        job_key="batch_gone", job_id="batch-unknown-to-the-provider", provider="openai",
        deployment=name, model=f"openai/{name}", stage=STAGE, run_id="run_0",
        status="in_progress", request_count=2,
    )  # fmt: skip
    lines = [
        BatchRequest(
            job_key=gone.job_key,
            custom_id=make_custom_id(item_id, key),
            item_id=item_id,
            request_key=key,
            deployment=name,
            stage=STAGE,
            run_id="run_0",
        )
        for item_id, key in keys.items()
    ]
    BatchLedger(store).record_submission(gone, lines)

    outcomes, _ = await run_batch(models, store, items, run_id="run_1")

    assert set(reasons(outcomes).values()) == {"ok"}
    lost = BatchLedger(store).jobs([gone.job_key])[gone.job_key]
    assert (lost.status, lost.reason) == ("failed", "batch_lost")
    assert fake_llm.batches.counts.jobs_created == 1  # the items, sent once more


async def test_a_provider_out_of_reach_fails_the_items_and_keeps_the_job_open(
    store: Store,
) -> None:
    nowhere = batch_models("http://127.0.0.1:1/v1", max_retries=0)  # nothing listens on port 1

    outcomes, _ = await run_batch(nowhere, store, judge_items(2))

    assert set(reasons(outcomes).values()) == {"batch_submit_failed"}
    (job,) = BatchLedger(store).open_jobs(STAGE)  # the next run looks for it before sending
    assert (job.status, job.reason, job.job_id) == ("submitting", "batch_submit_failed", None)
