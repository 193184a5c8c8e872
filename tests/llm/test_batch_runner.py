"""Provider batch jobs over real HTTP (the fake server's /v1/files and /v1/batches) and a real
DuckDB store: same requests and replies as online, per-item errors, cost, cache, chunking."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_llm import FakeLlm, Rule
from tests.llm.batch_helpers import (
    INPUT_PRICE,
    OUTPUT_PRICE,
    STAGE,
    Verdict,
    batch_models,
    judge_items,
    run_batch,
)
from toucan.errors import ConfigError, LlmError
from toucan.ids import canonical_json
from toucan.llm.batch_items import BatchItem, parse_outcome
from toucan.llm.batch_ledger import BatchLedger
from toucan.llm.batch_runner import BatchRunner
from toucan.llm.cache import LlmCache
from toucan.llm.replies import CallMeta, LlmReply
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.records import BatchJob, BatchRequest
from toucan.store import Store

pytestmark = pytest.mark.anyio
REPLY_FIELDS = {"latency_ms", "cost_usd"}  # the only fields a batch reply may differ in


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "toucan.duckdb")


def mixed_items() -> list[BatchItem]:
    """Structured judge requests, and one with tools and its own parameters."""
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    tool_item = BatchItem(
        item_id="tools_0",
        messages=[{"role": "user", "content": "find it"}],
        tools=tools,
        params={"max_tokens": 50},
    )
    return [*judge_items(3), tool_item]


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", None),
        ("anthropic", None),  # a response_format goes as LiteLLM's forced json_tool_call
        ("anthropic", "claude-sonnet-4-5-20250929"),  # as native output_format, with its beta
    ],
)
async def test_batch_lines_carry_the_online_request_and_come_back_as_the_online_reply(
    fake_llm: FakeLlm, store: Store, provider: str, model: str | None
) -> None:
    fake_llm.script(
        [
            Rule(contains="number 1", answer={"reasoning": "fine", "score": 4}),
            Rule(has_tools=True, tool_calls=[("lookup", {"q": "x"})]),
        ]
    )
    models = batch_models(fake_llm, provider=provider)
    if model is not None:
        judge = models.judge[0].model_copy(update={"model": f"anthropic/{model}"})
        models = models.model_copy(update={"judge": [judge]})
    items = mixed_items()
    router = LlmRouter(models)
    online: dict[str, LlmReply] = {}
    for item in items:
        meta = CallMeta(item_id=item.item_id)
        online[item.item_id] = await router.complete(
            "judge", item.messages, tools=item.tools, response_format=item.response_format,
            params=item.params, meta=meta,
        )  # fmt: skip
    await router.aclose()
    online_bodies = sorted(canonical_json(body) for body in fake_llm.requests)
    fake_llm.reset()

    outcomes, _ = await run_batch(models, store, items)

    assert sorted(canonical_json(body) for body in fake_llm.requests) == online_bodies
    assert fake_llm.batches.counts.jobs_created == 1
    for item in items:
        batch_reply = outcomes[item.item_id]
        assert isinstance(batch_reply, LlmReply)
        assert batch_reply.model_dump(exclude=REPLY_FIELDS) == online[item.item_id].model_dump(
            exclude=REPLY_FIELDS
        )
    tool_reply = outcomes["tools_0"]
    assert isinstance(tool_reply, LlmReply)
    assert tool_reply.tool_calls[0].parsed_arguments() == {"q": "x"}


async def test_a_batch_reply_parses_through_the_online_structured_path(
    fake_llm: FakeLlm, store: Store
) -> None:
    fake_llm.script([Rule(times=1, text="I would say it is fine.")])  # the first line: prose
    models = batch_models(fake_llm)
    items = judge_items(2)
    outcomes, _ = await run_batch(models, store, items)
    router = LlmRouter(models, cache=LlmCache())
    parsed = {}
    for item in items:
        parsed[item.item_id], _ = await parse_outcome(router, item, outcomes[item.item_id], Verdict)
    await router.aclose()
    plain = LlmRouter(models)
    online, _ = await complete_structured(plain, "judge", items[1].messages, Verdict)
    await plain.aclose()

    assert parsed["task_0"] == parsed["task_1"] == online
    assert fake_llm.calls.total == 4  # two batch lines, the online repair of the prose, online
    assert fake_llm.requests[2]["messages"][-2]["content"] == "I would say it is fine."
    assert router.cache is not None and len(router.cache) == 2  # both cached once parsed


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_request_that_fails_inside_a_batch_becomes_that_items_error(
    fake_llm: FakeLlm, store: Store, provider: str
) -> None:
    fake_llm.script([Rule(contains="number 1", status=400)])
    models = batch_models(fake_llm, provider=provider)
    outcomes, events = await run_batch(models, store, judge_items(3))

    failed = outcomes["task_1"]
    assert isinstance(failed, LlmError) and failed.reason == "batch_request_failed"
    assert all(isinstance(outcomes[f"task_{i}"], LlmReply) for i in (0, 2))
    by_item = {event.item_id: event for event in events}
    assert by_item["task_1"].status == "error"
    assert by_item["task_1"].error_class == "batch_request_failed"
    assert by_item["task_0"].status == "ok" and by_item["task_0"].tokens_in > 0
    assert fake_llm.batches.counts.jobs_created == 1  # a failed line is final: not sent again


async def test_cost_is_recorded_at_the_batch_price(fake_llm: FakeLlm, store: Store) -> None:
    outcomes, events = await run_batch(batch_models(fake_llm), store, judge_items(1))
    reply = outcomes["task_0"]
    assert isinstance(reply, LlmReply)
    online_cost = (
        reply.usage.prompt_tokens * INPUT_PRICE + reply.usage.completion_tokens * OUTPUT_PRICE
    )
    assert reply.cost_usd == pytest.approx(online_cost * 0.5)
    assert events[0].cost_usd == pytest.approx(reply.cost_usd)

    priced = batch_models(fake_llm, batch_input_cost_per_token=1e-7, batch_output_cost_per_token=0)
    again, _ = await run_batch(priced, store, judge_items(1, prefix="other"), run_id="run_2")
    reply = again["other_0"]
    assert isinstance(reply, LlmReply)
    assert reply.cost_usd == pytest.approx(reply.usage.prompt_tokens * 1e-7)


async def test_the_job_and_its_request_map_are_in_the_store(
    fake_llm: FakeLlm, store: Store
) -> None:
    outcomes, _ = await run_batch(batch_models(fake_llm), store, judge_items(3))

    (job,) = store.select(BatchJob)
    assert job.status == "completed" and job.job_id and job.stage == STAGE
    assert (job.request_count, job.completed_count, job.provider) == (3, 3, "openai")
    assert job.input_file_id and job.output_file_id and job.ended_at is not None
    requests = store.select(BatchRequest)
    assert {request.item_id for request in requests} == set(outcomes)
    assert BatchLedger(store).open_jobs(STAGE) == []


async def test_jobs_are_cut_at_the_configured_size(fake_llm: FakeLlm, store: Store) -> None:
    small = batch_models(fake_llm).batch.model_copy(update={"max_requests_per_job": 2})
    outcomes, _ = await run_batch(batch_models(fake_llm, small), store, judge_items(5))

    assert all(isinstance(outcome, LlmReply) for outcome in outcomes.values())
    assert fake_llm.batches.counts.jobs_created == 3
    assert sorted(job.request_count for job in store.select(BatchJob)) == [1, 2, 2]


async def test_cached_replies_are_not_sent_again(fake_llm: FakeLlm, store: Store) -> None:
    models = batch_models(fake_llm)
    items = judge_items(2)
    cache = LlmCache()
    outcomes, _ = await run_batch(models, store, items, cache=cache)
    router = LlmRouter(models, cache=cache)
    for item in items:
        await parse_outcome(router, item, outcomes[item.item_id], Verdict)

    again, _ = await run_batch(models, store, items, run_id="run_2", cache=cache)

    assert all(isinstance(r, LlmReply) and r.cached for r in again.values())
    assert fake_llm.batches.counts.jobs_created == 1


async def test_items_of_a_deployment_without_a_batch_api_stay_online(
    fake_llm: FakeLlm, store: Store
) -> None:
    models = batch_models(fake_llm)
    without = models.generators[1].model_copy(update={"supports_batch": False})
    models = models.model_copy(update={"generators": [models.generators[0], without]})
    router = LlmRouter(models)
    runner = BatchRunner(router, BatchLedger(store), run_id="r", stage=STAGE)
    items = judge_items(12)

    batchable, online = runner.split("generator", items)

    assert batchable and online and len(batchable) + len(online) == 12
    assert {runner.deployment_for("generator", item) for item in online} == {without.name}
    with pytest.raises(ConfigError):
        await runner.run("generator", online[:1])
    await router.aclose()
