"""Each answered model call is stored the moment it returns (flows/durable.py): an LLM stage run
by the real CLI, killed with kill -9 mid-batch and run again, pays again for at most the calls
that were in flight at the kill, in every LLM stage that batches its rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from cli import app
from flows.durable import durable_replies
from flows.runner import run_stage_async
from tests.fake_llm import FakeLlm, Rule
from tests.filter_trajectories.samples import make_task, make_trajectory
from tests.ops.test_faults import kill_group, start_cli, wait_until
from tests.synthesize.seed import (
    FAKE_KEY_ENV,
    GENERATORS,
    JUDGE,
    fake_settings,
    judge_with,
    seed_servers,
    stage_model,
    write_config,
)
from toucan.ids import make_id
from toucan.llm.cache import make_cache_key
from toucan.llm.replies import LlmReply
from toucan.records import LlmCacheEntry, Task, TaskRating, TrajectoryRating
from toucan.store import Store

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 24  # model calls of a clean run: one batch (tasks.llm_batch.BATCH_ITEMS is 512)
ANSWERED = 10  # calls the fake answers before it holds every later one until the kill
IN_FLIGHT = 4  # the stage's concurrency: the calls held at the kill
HOLD_S = 3600  # a held call is neither answered nor timed out by the client before the kill
WAIT_S = 240.0  # a CLI start (Prefect, LiteLLM) takes seconds idle, minutes on a loaded box


model_reply = stage_model(judge_with(5))  # a competent generator or judge, any stage


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLlm]:
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-fake")
    with FakeLlm(default=model_reply, latency=0.05) as server:
        yield server


def synthesized_tasks(store: Store, config: Path, count: int) -> list[Task]:
    """`count` ok tasks made by the synthesize stage itself (in this process, no Prefect)."""
    seed_servers(store)
    settings = fake_settings(config)
    asyncio.run(run_stage_async("synthesize", settings, store, limit=count, seed=3))
    tasks = store.select(Task, "status = 'ok' ORDER BY task_id")
    assert len(tasks) == count
    return tasks


def seed_for_synthesize(store: Store, config: Path) -> None:
    seed_servers(store)


def seed_for_filter_tasks(store: Store, config: Path) -> None:
    synthesized_tasks(store, config, ITEMS)


def seed_for_diversify(store: Store, config: Path) -> None:
    tasks = synthesized_tasks(store, config, ITEMS // 2)  # two modes: one call each
    ratings = [
        TaskRating(rating_id=make_id("rating", t.task_id), task_id=t.task_id, judge="J", keep=True)
        for t in tasks
    ]
    store.insert(ratings)


def seed_for_filter_trajectories(store: Store, config: Path) -> None:
    tasks = [make_task(question=f"What is {i}*7?") for i in range(ITEMS)]
    calls = [("calculate", {"expression": "6*7"}, "42", False)]
    store.insert([*tasks, *(make_trajectory(task, calls) for task in tasks)])


@dataclass(frozen=True)
class Case:
    command: list[str]
    seed: Callable[[Store, Path], None]
    section: str  # where the stage's concurrency is set
    done: Callable[[Store], int]  # items finished


CASES = {
    "synthesize": Case(
        ["synthesize", "--limit", str(ITEMS), "--seed", "7"],
        seed_for_synthesize,
        "synthesize",
        lambda store: store.count(Task),
    ),
    "filter-tasks": Case(
        ["filter-tasks"], seed_for_filter_tasks, "filter_tasks", lambda s: s.count(TaskRating)
    ),
    "filter-trajectories": Case(
        ["filter-trajectories"],
        seed_for_filter_trajectories,
        "filter_trajectories",
        lambda store: store.count(TrajectoryRating),
    ),
    "diversify": Case(
        ["diversify", "--variants", "1"],
        seed_for_diversify,
        "synthesize",  # diversify runs at the generators' concurrency
        lambda store: store.count(Task, "kind = 'diversified'"),
    ),
}


def request_key(body: dict[str, Any]) -> bytes:
    """What makes two requests the same paid call."""
    asked = {k: body.get(k) for k in ("model", "messages", "tools", "response_format", "seed")}
    return orjson.dumps(asked, option=orjson.OPT_SORT_KEYS)


def held_calls(fake_llm: FakeLlm) -> int:
    """Calls the fake holds: those sent once the ANSWERED ones were answered."""
    counts = fake_llm.calls
    return counts.total - ANSWERED if counts.by_status[200] == ANSWERED else 0


def put_reply(cache: Any, question: str) -> None:
    messages = [{"role": "user", "content": question}]
    key = make_cache_key("Gen", "openai/gen", messages, None, None, {})
    cache.put(key, LlmReply(text=f"answer to {question}", deployment="Gen", model="openai/gen"))


def test_each_reply_is_in_the_store_while_the_run_goes_on_and_the_rest_at_the_end(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.duckdb")
    with store.holding(), durable_replies(store, "run_1") as replies:
        cache = replies.cache()
        put_reply(cache, "first")
        wait_until(lambda: store.count(LlmCacheEntry) == 1, 60, "the reply stored")  # mid-block
        put_reply(cache, "first")  # the same call again: stored once
        put_reply(cache, "second")
    assert store.count(LlmCacheEntry) == 2 and replies.written == 2
    assert cache.drain_new() == []  # nothing left for the batch to write


def test_a_reply_whose_write_failed_is_kept_for_the_next_write_and_the_error_ends_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that cannot be written: the thread logs its failure and gives the entry back to
    the cache (a batch would write it with its rows); closing tries once more and raises."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    broken = Store(blocker / "s.duckdb")
    with pytest.raises(OSError), durable_replies(broken, "run_1") as replies:
        cache = replies.cache()
        put_reply(cache, "first")
        wait_until(lambda: any(r.name == "flows.durable" for r in caplog.records), 60, "a log")
    assert [entry.model for entry in cache.drain_new()] == ["openai/gen"]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("stage", list(CASES))
def test_a_stage_killed_mid_batch_pays_again_only_for_the_calls_in_flight(
    stage: str, tmp_path: Path, fake_llm: FakeLlm
) -> None:
    case = CASES[stage]
    store = Store(tmp_path / "s.duckdb")
    config = write_config(
        tmp_path / "toucan.yaml",
        fake_llm.base_url,
        per_deployment={name: {"timeout_s": HOLD_S} for name in [*GENERATORS, JUDGE]},
        **{case.section: {"concurrency": IN_FLIGHT}},
    )
    case.seed(store, config)
    stored_before = store.count(LlmCacheEntry)
    fake_llm.reset()  # count the stage's calls only
    # the first ANSWERED calls of the run are answered, every later one is held until the kill
    fake_llm.script([Rule(on_calls=set(range(ANSWERED, 100 * ITEMS)), delay=HOLD_S)])
    arguments = [*case.command, "--store", str(store.path), "--config", str(config), "--json"]

    log = tmp_path / "run.log"
    run = start_cli(arguments, log)
    try:
        wait_until(
            lambda: held_calls(fake_llm) == IN_FLIGHT or run.poll() is not None,
            WAIT_S,
            "the calls after the answered ones held",
        )
        assert run.poll() is None, log.read_text()[-3000:]
        # each answered call is in the store while its batch is still running
        stored = lambda: store.count(LlmCacheEntry) - stored_before == ANSWERED  # noqa: E731
        wait_until(stored, 60, "every answered call stored")
        in_flight_at_kill = fake_llm.calls.in_flight
    finally:
        kill_group(run)
    first_run = list(fake_llm.requests)
    answered = {request_key(body) for body in first_run[:ANSWERED]}
    sent = {request_key(body) for body in first_run}
    assert case.done(store) == 0  # the kill came before any row was written

    fake_llm.script([])  # every call is answered again
    rerun_first = fake_llm.calls.total
    rerun = CliRunner().invoke(app, arguments)
    assert rerun.exit_code == 0, rerun.output
    rerun_keys = [request_key(body) for body in fake_llm.requests[rerun_first:]]

    assert not [key for key in rerun_keys if key in answered]  # no answered call paid twice
    # the calls in flight at the kill are the ones paid again (all of them: never answered)
    assert len([key for key in rerun_keys if key in sent]) == in_flight_at_kill == IN_FLIGHT
    assert len(rerun_keys) == ITEMS - ANSWERED  # one call per item, the stored ones excepted
    assert case.done(store) == ITEMS  # and the rerun finished every item
