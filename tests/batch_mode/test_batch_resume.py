"""A batch-mode stage run by the real CLI, killed with kill -9 while its jobs are pending, and
run again: the recorded jobs are waited for, nothing is sent twice, every row is written once."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from tests.batch_mode.helpers import batch_config
from tests.fake_llm import FakeLlm
from tests.fake_llm_batches import JobPlan
from tests.ops.test_faults import kill_group, start_cli, wait_until
from tests.synthesize.seed import seed_servers
from toucan.records import BatchJob, BatchRequest, Task
from toucan.store import Store

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 12
WAIT_S = 480.0  # a CLI start (Prefect, LiteLLM) takes seconds idle, minutes on a loaded box


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_run_killed_while_its_jobs_are_pending_resubmits_nothing_when_run_again(
    tmp_path: Path, fake_llm: FakeLlm, provider: str
) -> None:
    store = Store(tmp_path / "s.duckdb")
    seed_servers(store)
    jobs = {"max_wait_s": 3600.0}  # the kill comes long before toucan would give up
    config = batch_config(tmp_path / "toucan.yaml", fake_llm.base_url, jobs=jobs, provider=provider)
    fake_llm.batches.plan([], default=JobPlan(hold=True))  # pending until released
    arguments = ["synthesize", "--limit", str(ITEMS), "--seed", "7", "--store", str(store.path),
                 "--config", str(config), "--json"]  # fmt: skip

    log = tmp_path / "run.log"
    run = start_cli(arguments, log)
    try:
        counts = fake_llm.batches.counts
        # a job is polled once its id is stored, and every pending job every 0.1 s at most
        polled = lambda: counts.requests_received == ITEMS and counts.retrieves > 10 * ITEMS  # noqa: E731
        wait_until(lambda: polled() or run.poll() is not None, WAIT_S, f"jobs polled: {counts}")
        assert run.poll() is None, log.read_text()[-3000:]
    finally:
        kill_group(run)
    jobs = counts.jobs_created
    assert len(store.select(BatchJob, "job_id IS NOT NULL")) == jobs  # recorded before waiting
    assert store.count(Task) == 0  # killed before any row was written
    assert counts.by_status.total() == 0  # and before any job ended
    chat_lines = fake_llm.calls.total

    fake_llm.batches.plan([], default=JobPlan())
    fake_llm.batches.release()  # the provider finishes the jobs the killed run paid for
    rerun = CliRunner().invoke(app, arguments)
    assert rerun.exit_code == 0, rerun.output

    assert counts.jobs_created == jobs and counts.requests_received == ITEMS  # none sent again
    assert chat_lines == 0 and fake_llm.calls.total == ITEMS  # each line answered once
    tasks = store.select(Task)
    assert len(tasks) == ITEMS == len({task.task_id for task in tasks})
    # (a near-duplicate is `rejected`: Anthropic drops the `seed` that sets the fake's tasks apart)
    assert {task.status for task in tasks} - {"rejected"} == {"ok"}
    assert store.count(BatchRequest) == ITEMS
    assert {job.status for job in store.select(BatchJob)} == {"completed"}
