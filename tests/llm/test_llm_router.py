"""The router through real HTTP and LiteLLM against the scripted fake model server."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from tests.fake_llm import FakeLlm, Rule, models_config_for, user_messages
from toucan.errors import LlmError, ModelTimeout, RateLimited
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.records import Event

pytestmark = pytest.mark.anyio
META = CallMeta(run_id="run_test", stage="synthesize", server_id="srv_weather", item_id="item_1")


class City(BaseModel):
    city: str
    population: int


async def test_a_json_answer_is_parsed_and_its_call_recorded_with_tokens_and_cost(
    fake_llm: FakeLlm, transport: str
) -> None:
    fake_llm.script([Rule(contains="capital", answer={"city": "Paris", "population": 2100000})])
    models = models_config_for(
        fake_llm, input_cost_per_token=1e-6, output_cost_per_token=2e-6, transport=transport
    )
    router = LlmRouter(models)

    city, reply = await complete_structured(
        router, "judge", user_messages("capital of France?"), City, meta=META
    )

    assert city == City(city="Paris", population=2100000)
    assert reply.deployment == "judge-a" and reply.model == "openai/judge-a"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    expected_cost = reply.usage.prompt_tokens * 1e-6 + reply.usage.completion_tokens * 2e-6
    assert reply.cost_usd == pytest.approx(expected_cost)
    [event] = router.drain_events()
    assert isinstance(event, Event)
    assert (event.run_id, event.stage, event.server, event.item_id) == (
        "run_test",
        "synthesize",
        "srv_weather",
        "item_1",
    )
    assert (event.kind, event.model, event.status) == ("llm_call", "judge-a", "ok")
    assert event.tokens_in == reply.usage.prompt_tokens
    assert event.tokens_out == reply.usage.completion_tokens
    assert event.cost_usd == pytest.approx(expected_cost)
    assert event.latency_ms > 0
    assert router.drain_events() == []
    request = fake_llm.requests[0]
    assert request["response_format"]["json_schema"]["schema"]["required"] == ["city", "population"]


async def test_parallel_tool_calls_come_back_in_order(fake_llm: FakeLlm, transport: str) -> None:
    fake_llm.script(
        [Rule(has_tools=True, tool_calls=[("get_weather", {"city": "Oslo"}), ("get_time", {})])]
    )
    router = LlmRouter(models_config_for(fake_llm, transport=transport))
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        for name in ("get_weather", "get_time")
    ]

    reply = await router.complete(
        "teacher", user_messages("weather and time?"), tools=tools, meta=META
    )

    assert [call.name for call in reply.tool_calls] == ["get_weather", "get_time"]
    assert reply.tool_calls[0].parsed_arguments() == {"city": "Oslo"}
    assert reply.finish_reason == "tool_calls"


async def test_a_storm_of_429s_slows_the_deployment_down_and_every_call_completes(
    fake_llm: FakeLlm, transport: str
) -> None:
    fake_llm.script([Rule(on_calls=set(range(0, 40, 2)), status=429, retry_after=0.1)])
    router = LlmRouter(models_config_for(fake_llm, max_concurrency=16, transport=transport))

    replies = await asyncio.gather(
        *(
            router.complete("gen-a", user_messages(f"task {index}"), meta=META)
            for index in range(40)
        )
    )

    assert len(replies) == 40 and all(reply.text == "ok" for reply in replies)
    assert fake_llm.calls.by_status[429] == 20
    limiter = router.limiters["gen-a"]
    assert limiter.stats.window_cuts >= 1
    assert limiter.stats.lowest_window < 16
    assert limiter.in_flight == 0


async def test_429s_beyond_the_patience_budget_raise_rate_limited(fake_llm: FakeLlm) -> None:
    fake_llm.script([Rule(status=429, retry_after=0.1)])
    router = LlmRouter(models_config_for(fake_llm), rate_limit_patience_s=1.0)

    with pytest.raises(RateLimited) as caught:
        await router.complete("gen-a", user_messages("hello"), meta=META)

    assert caught.value.reason == "rate_limited"
    assert fake_llm.calls.total >= 2
    [event] = router.drain_events()
    assert (event.status, event.error_class) == ("error", "rate_limited")


async def test_a_500_is_retried_until_it_succeeds(fake_llm: FakeLlm, transport: str) -> None:
    fake_llm.script([Rule(times=2, status=500)])
    router = LlmRouter(models_config_for(fake_llm, max_retries=3, transport=transport))

    reply = await router.complete("gen-a", user_messages("hello"), meta=META)

    assert reply.text == "ok"
    assert fake_llm.calls.by_status == {500: 2, 200: 1}


async def test_a_model_that_does_not_answer_in_time_raises_model_timeout(
    fake_llm: FakeLlm, transport: str
) -> None:
    fake_llm.script([Rule(delay=30.0, answer={"late": True})])
    models = models_config_for(fake_llm, timeout_s=0.5, max_retries=0, transport=transport)
    router = LlmRouter(models)

    with pytest.raises(ModelTimeout) as caught:
        await router.complete("gen-a", user_messages("hello"), meta=META)

    assert caught.value.reason == "model_timeout"
    [event] = router.drain_events()
    assert (event.status, event.error_class) == ("error", "model_timeout")


async def test_a_failing_deployment_falls_back_to_the_configured_one(fake_llm: FakeLlm) -> None:
    fake_llm.script([Rule(model="gen-a", status=503)])
    models = models_config_for(fake_llm, max_retries=0, fallbacks={"gen-a": ["gen-b"]})
    router = LlmRouter(models)

    reply = await router.complete("gen-a", user_messages("hello"), meta=META)

    assert reply.deployment == "gen-b"
    assert fake_llm.calls.by_model == {"gen-a": 1, "gen-b": 1}
    assert [event.status for event in router.drain_events()] == ["error", "ok"]


async def test_a_rejected_request_is_not_retried(fake_llm: FakeLlm, transport: str) -> None:
    fake_llm.script([Rule(status=400)])
    router = LlmRouter(models_config_for(fake_llm, max_retries=3, transport=transport))

    with pytest.raises(LlmError) as caught:
        await router.complete("gen-a", user_messages("hello"), meta=META)

    assert caught.value.reason == "model_request_rejected"
    assert fake_llm.calls.total == 1


def test_a_group_call_picks_a_deployment_by_weight_and_item_deterministically(
    fake_llm: FakeLlm,
) -> None:
    router = LlmRouter(models_config_for(fake_llm, generators=("g1", "g2", "g3")))
    router.deployments["g3"].weight = 0.0

    picks = [router.pick_deployment("generator", f"item_{index}") for index in range(300)]

    assert picks == [router.pick_deployment("generator", f"item_{index}") for index in range(300)]
    assert set(picks) == {"g1", "g2"}
    assert 100 < picks.count("g1") < 200


def test_an_unknown_target_is_a_config_error(fake_llm: FakeLlm) -> None:
    router = LlmRouter(models_config_for(fake_llm))

    with pytest.raises(Exception) as caught:
        router.resolve("nobody", "seed")

    assert getattr(caught.value, "reason", None) == "bad_config"
