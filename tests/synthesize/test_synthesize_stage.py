"""Stage 2 end to end against the fake model server over real HTTP, on a real DuckDB file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flows.runner import run_stage_async
from tests.fake_llm import FakeLlm, Rule
from tests.synthesize.seed import GENERATORS, competent_generator, fake_settings, write_config
from toucan.prompts import template_hash
from toucan.records import Event, LlmCacheEntry, Task, Tool
from toucan.store import Store


def synthesize(config: Path, store: Store, *, per_server=None, limit=None, strategies=None, seed=0):
    settings = fake_settings(config)
    plan = {"strategies": strategies, "per_server": per_server, "limit": limit, "seed": seed}
    return asyncio.run(run_stage_async("synthesize", settings, store, **plan))


def tasks_by_generator(store: Store) -> dict[str, list[Task]]:
    grouped: dict[str, list[Task]] = {}
    for task in store.select(Task):
        grouped.setdefault(task.generator, []).append(task)
    return grouped


def test_every_strategy_produces_tasks_whose_targets_exist(store: Store, config_path: Path) -> None:
    summary = synthesize(config_path, store, per_server=1)
    assert set(summary.by_strategy) == {"single_server", "multi_server", "featured"}
    assert summary.by_status == {"ok": summary.planned}
    assert set(summary.by_generator) == set(GENERATORS)
    current = {(t.server_id, t.name) for t in store.select(Tool, "current")}
    tasks = store.select(Task)
    assert len(tasks) == summary.planned
    for task in tasks:
        assert task.status == "ok" and task.question
        assert task.target_tools and task.prompt_hash == template_hash(
            f"synthesize/{task.strategy}"
        )
        for target in task.target_tools:
            assert (target.server_id, target.tool) in current
            assert target.server_id in task.server_ids
        if task.strategy != "single_server":
            assert len({t.server_id for t in task.target_tools}) >= 2
    assert store.count(Event, "stage = 'synthesize' AND kind = 'llm_call'") == summary.planned
    assert store.count(Event, "stage = 'synthesize' AND kind = 'item'") == summary.planned


def test_a_second_run_adds_no_rows_and_makes_no_model_calls(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    first = synthesize(config_path, store, limit=9)
    calls = fake_llm.calls.total
    rows = store.count(Task), store.count(LlmCacheEntry)
    second = synthesize(config_path, store, limit=9)
    assert calls == first.planned == 9
    assert fake_llm.calls.total == calls
    assert (store.count(Task), store.count(LlmCacheEntry)) == rows
    assert (second.already_done, second.attempted) == (9, 0)


def test_a_task_carries_its_replys_accounting_and_a_cached_reply_is_not_counted_again(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    first = synthesize(config_path, store, limit=3)
    made = store.select(Task)
    for task in made:
        assert task.deployment == task.generator and task.usage.prompt_tokens > 0
        assert not task.cached and "tokens_in" not in task.metadata
    assert first.tokens_in == sum(t.usage.prompt_tokens for t in made)
    store.execute("DELETE FROM tasks")  # the replies stay in the cache
    calls = fake_llm.calls.total
    again = synthesize(config_path, store, limit=3)
    remade = {t.task_id: t for t in store.select(Task)}
    assert fake_llm.calls.total == calls and all(t.cached for t in remade.values())
    assert {t.task_id: t.usage for t in made} == {k: t.usage for k, t in remade.items()}
    assert (again.tokens_in, again.tokens_out, again.cost_usd) == (0, 0, 0.0)


def test_one_failing_item_leaves_the_others_stored(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    fake_llm.script([Rule(on_calls={0}, status=400)])
    summary = synthesize(config_path, store, limit=6)
    assert summary.by_status == {"ok": 5, "error": 1}
    [failed] = store.select(Task, "status = 'error'")
    assert failed.reason == "model_request_rejected"


def test_bad_replies_become_rows_with_their_reason_and_the_rest_finish(
    tmp_path: Path, store: Store, fake_llm: FakeLlm
) -> None:
    config = write_config(
        tmp_path / "bad.yaml",
        fake_llm.base_url,
        per_deployment={"Gemma-2-27B-IT": {"timeout_s": 0.5, "max_retries": 0}},
    )
    fake_llm.script(
        [
            Rule(model="Llama-3-70B-Instruct", text="Sure! Here is a lovely question about maths."),
            Rule(model="Qwen2-72B-Instruct", answer={"server_analysis": "no question given"}),
            Rule(
                model="Command-R+",
                respond=lambda request: {
                    **competent_generator(request),
                    "target_tools": [{"server": "Calculator", "tool": "teleport"}],
                },
            ),
            Rule(model="Gemma-2-27B-IT", delay=2.5, answer={}),
        ]
    )
    summary = synthesize(config, store, limit=10, strategies=["single_server"])
    assert summary.attempted == 10
    reasons = {g: {(t.status, t.reason) for t in ts} for g, ts in tasks_by_generator(store).items()}
    assert reasons == {
        "Llama-3-70B-Instruct": {("error", "unparseable_reply")},
        "Qwen2-72B-Instruct": {("error", "unparseable_reply")},
        "Command-R+": {("rejected", "target_tool_not_found")},
        "Gemma-2-27B-IT": {("error", "model_timeout")},
        "Mistral-Large": {("ok", None)},
    }
    prose = store.select(Task, "generator = 'Llama-3-70B-Instruct'")[0]
    assert prose.raw_reply == "Sure! Here is a lovely question about maths."
    missing = store.select(Task, "generator = 'Command-R+'")[0]
    assert missing.metadata["missing_tools"] == ["Calculator/teleport"]


def test_a_429_storm_slows_the_run_down_and_every_task_is_still_stored(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    fake_llm.script([Rule(times=12, status=429, retry_after=0.2)])
    summary = synthesize(config_path, store, limit=8)
    assert summary.by_status == {"ok": 8}
    assert fake_llm.calls.by_status[429] == 12


def test_a_429_storm_that_never_ends_becomes_rate_limited_rows(
    tmp_path: Path, store: Store, fake_llm: FakeLlm
) -> None:
    config = write_config(tmp_path / "storm.yaml", fake_llm.base_url, patience_s=1.0)
    fake_llm.script([Rule(model="Command-R+", status=429, retry_after=0.3)])
    synthesize(config, store, limit=10, strategies=["single_server"])
    reasons = {g: {(t.status, t.reason) for t in ts} for g, ts in tasks_by_generator(store).items()}
    assert reasons.pop("Command-R+") == {("error", "rate_limited")}
    assert all(outcomes == {("ok", None)} for outcomes in reasons.values())


def test_a_failed_item_is_retried_by_the_next_run(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    fake_llm.script([Rule(model="Command-R+", times=2, status=503)])  # the call and its retry
    first = synthesize(config_path, store, limit=5, strategies=["single_server"])
    assert first.by_status == {"ok": 4, "error": 1}
    assert store.select(Task, "status = 'error'")[0].reason == "model_server_error"
    second = synthesize(config_path, store, limit=5, strategies=["single_server"])
    assert second.by_status == {"ok": 1}
    assert store.count(Task, "status = 'ok'") == 5


def test_near_duplicate_questions_keep_one_and_point_to_it(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    fake_llm.script(
        [
            Rule(
                respond=lambda request: {
                    **competent_generator(request),
                    "question": "How do I plan my week with these tools?",
                }
            )
        ]
    )
    summary = synthesize(config_path, store, per_server=2, strategies=["single_server"])
    assert summary.near_duplicates == 5  # two tasks per server, same question: one dropped each
    dropped = store.select(Task, "reason = 'near_duplicate'")
    kept = {t.task_id: t for t in store.select(Task, "status = 'ok'")}
    assert len(dropped) == len(kept) == 5
    for task in dropped:
        assert task.status == "rejected"
        assert kept[task.metadata["duplicate_of"]].server_ids == task.server_ids
    again = synthesize(config_path, store, per_server=2, strategies=["single_server"])
    assert again.near_duplicates == 0 and store.count(Task, "status = 'ok'") == 5
