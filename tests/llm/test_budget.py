"""Budget caps: reserve before a call, settle from its usage, refuse what would cross a cap.

Over real HTTP against the fake model server, both transports; the routers of a run share
one `Budget`, also across threads (batches run in threads, each with its own loop).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests.fake_llm import FakeLlm, models_config_for
from toucan.config import BudgetConfig, ModelDeployment, ModelsConfig, load_settings
from toucan.errors import BudgetExhausted, ConfigError, ToucanError
from toucan.llm.budget import Budget, check_budget_prices
from toucan.llm.cache import LlmCache
from toucan.llm.replies import CallMeta, LlmReply
from toucan.llm.router import LlmRouter

pytestmark = pytest.mark.anyio
PRICES = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
# the fake answers "ok" (~9 completion tokens): 12 keeps each reservation close to its cost
PARAMS = {"max_tokens": 12}
HANG_GUARD_S = 60  # a wait on the budget that never ends fails the test instead of hanging it


def ask(index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question number {index:03d}, please answer"}]


def priced_models(fake_llm: FakeLlm, **fields: Any) -> ModelsConfig:
    return models_config_for(fake_llm, **PRICES, params=PARAMS, **fields)


async def one_call_cost(fake_llm: FakeLlm, models: ModelsConfig) -> float:
    """What one of these calls really costs (every prompt is the same length)."""
    reply = await LlmRouter(models).complete("gen-a", ask(999), use_cache=False)
    fake_llm.reset()
    return reply.cost_usd


async def run_items(router: LlmRouter, items: range, stage: str = "synthesize") -> list[Any]:
    """Each item one call; the reply or the error it ended with."""

    async def one(index: int) -> LlmReply | BaseException:
        meta = CallMeta(run_id="run_b", stage=stage, item_id=f"item_{index}")
        try:
            return await router.complete("gen-a", ask(index), meta=meta, use_cache=False)
        except ToucanError as error:
            return error

    async with asyncio.timeout(HANG_GUARD_S):
        return list(await asyncio.gather(*(one(index) for index in items)))


async def test_a_cap_at_half_a_batch_stops_within_one_call_of_it_and_settles_the_calls_in_flight(
    fake_llm: FakeLlm, transport: str
) -> None:
    models = priced_models(fake_llm, transport=transport, max_concurrency=4)
    cost = await one_call_cost(fake_llm, models)
    fake_llm.latency = 0.1  # several calls in flight when the cap is reached
    cap = 10.5 * cost
    budget = Budget(BudgetConfig(usd=cap))
    router = LlmRouter(models, budget=budget)

    results = await run_items(router, range(20))

    answered = [r for r in results if isinstance(r, LlmReply)]
    refused = [r for r in results if not isinstance(r, LlmReply)]
    spend = budget.spend()
    assert refused and all(isinstance(r, BudgetExhausted) for r in refused)
    assert {r.reason for r in refused} == {"budget_exhausted"}
    assert fake_llm.calls.total == len(answered)  # a refused call is never sent
    assert spend.spent_usd == pytest.approx(sum(r.cost_usd for r in answered))
    assert spend.spent_usd <= cap and cap - spend.spent_usd < 2 * cost
    assert spend.reserved_usd == 0 and spend.calls == len(answered)
    assert spend.by_deployment == {"gen-a": pytest.approx(spend.spent_usd)}
    assert spend.by_stage == {"synthesize": pytest.approx(spend.spent_usd)}
    events = router.drain_events()
    assert sum(e.error_class == "budget_exhausted" for e in events) == len(refused)
    assert sum(e.status == "ok" for e in events) == len(answered)


def test_routers_in_two_threads_share_one_budget(fake_llm: FakeLlm) -> None:
    models = priced_models(fake_llm, max_concurrency=3)
    cost = asyncio.run(one_call_cost(fake_llm, models))
    fake_llm.latency = 0.05
    cap = 8.5 * cost
    budget = Budget(BudgetConfig(usd=cap))
    outcomes: list[list[Any]] = []

    def batch(items: range) -> None:
        async def run() -> list[Any]:
            router = LlmRouter(models, budget=budget)
            try:
                return await run_items(router, items)
            finally:
                await router.aclose()

        outcomes.append(asyncio.run(run()))

    threads = [threading.Thread(target=batch, args=(range(i, 40, 2),)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD_S)

    results = [result for outcome in outcomes for result in outcome]
    answered = [r for r in results if isinstance(r, LlmReply)]
    assert len(results) == 40 and fake_llm.calls.total == len(answered)
    assert all(isinstance(r, BudgetExhausted) for r in results if r not in answered)
    spend = budget.spend()
    assert spend.spent_usd <= cap and cap - spend.spent_usd < 2 * cost
    assert spend.reserved_usd == 0


async def test_cached_replies_reserve_nothing_and_count_nothing(fake_llm: FakeLlm) -> None:
    models = priced_models(fake_llm)
    cache = LlmCache()
    first = LlmRouter(models, cache=cache)
    for index in range(3):
        await first.complete("gen-a", ask(index))
    fake_llm.reset()
    budget = Budget(BudgetConfig(usd=0.0))  # not even one paid call fits
    rerun = LlmRouter(models, cache=cache, budget=budget)

    replies = [await rerun.complete("gen-a", ask(index)) for index in range(3)]

    assert all(reply.cached for reply in replies)
    assert fake_llm.calls.total == 0
    assert budget.spend().spent_usd == 0 and budget.spend().calls == 0
    with pytest.raises(BudgetExhausted):
        await rerun.complete("gen-a", ask(3))


async def test_a_deployment_cap_hands_the_call_to_its_fallback_and_a_stage_cap_stops_only_that_stage(
    fake_llm: FakeLlm,
) -> None:
    models = priced_models(fake_llm, fallbacks={"gen-a": ["gen-b"]})
    config = BudgetConfig(per_deployment={"gen-a": 0.0}, per_stage={"filter_tasks": 0.0})
    router = LlmRouter(models, budget=Budget(config))

    reply = await router.complete("gen-a", ask(1), meta=CallMeta(stage="synthesize"))
    with pytest.raises(BudgetExhausted) as caught:
        await router.complete("gen-a", ask(2), meta=CallMeta(stage="filter_tasks"))

    assert reply.deployment == "gen-b"
    assert fake_llm.calls.by_model == {"gen-b": 1}
    assert caught.value.scope == "stage"


async def test_calls_racing_for_the_last_dollars_wait_for_room_instead_of_stopping_early(
    fake_llm: FakeLlm,
) -> None:
    """All 30 calls start at once: reservations (each above its call's real cost) fill the
    cap long before the spending does. Calls wait for those in flight to settle and look
    again, so the run still ends within one call of the cap, and never above it."""
    models = priced_models(fake_llm, max_concurrency=64)
    cost = await one_call_cost(fake_llm, models)
    fake_llm.latency = 0.05
    cap = 10.2 * cost
    budget = Budget(BudgetConfig(usd=cap))
    router = LlmRouter(models, budget=budget)

    results = await run_items(router, range(30))

    answered = [r for r in results if isinstance(r, LlmReply)]
    assert fake_llm.calls.total == len(answered)
    assert fake_llm.calls.peak_in_flight < len(answered)  # they did not all fit at once
    spend = budget.spend()
    assert spend.spent_usd <= cap and cap - spend.spent_usd < 2 * cost
    assert spend.reserved_usd == 0


def test_a_cap_with_an_unpriced_deployment_refuses_to_start_unless_allowed() -> None:
    def models(**prices: float) -> ModelsConfig:
        def deployment(name: str, model: str) -> ModelDeployment:
            return ModelDeployment(name=name, model=model, api_base="http://x/v1", **prices)

        return ModelsConfig(
            generators=[deployment("gen", "openai/self-hosted-model")],
            teachers=[deployment("teacher", "openai/gpt-4o-mini")],
            judge=[deployment("judge", "openai/gpt-4o-mini")],
        )

    capped = BudgetConfig(usd=5.0)
    with pytest.raises(ConfigError) as caught:
        check_budget_prices(capped, models())
    assert caught.value.reason == "unpriced_deployment"
    assert "gen" in str(caught.value) and "teacher" not in str(caught.value)

    check_budget_prices(capped, models(), deployments=["teacher", "judge"])  # gen not in it
    check_budget_prices(capped.model_copy(update={"allow_unpriced": True}), models())
    check_budget_prices(BudgetConfig(), models())  # no cap, nothing to check
    priced = models(input_cost_per_token=1e-6, output_cost_per_token=1e-6)
    check_budget_prices(capped, priced)
    local = models().model_copy(update={"route_to_local": True})  # the embedded model is free
    check_budget_prices(capped, local)


@pytest.mark.parametrize(
    "budget",
    [
        {"usd": -1},
        {"per_deployment": {"No-Such-Model": 1.0}},
        {"per_deployment": {"GPT-4o-mini": -2}},
        {"cap": 3},
    ],
)
def test_a_bad_budget_setting_fails_at_load(budget: dict[str, Any]) -> None:
    """A misspelt stage in `budget.per_stage` is refused when a stage starts (the core knows no
    stage list): tests/ops/test_registry.py."""
    with pytest.raises(ConfigError) as caught:
        load_settings(profile="cloud", overrides={"budget": budget})
    assert caught.value.reason == "bad_config"


def test_the_defaults_cap_nothing() -> None:
    settings = load_settings(profile="cloud")
    assert not settings.budget.capped
    check_budget_prices(settings.budget, settings.models)
    capped = load_settings(profile="cloud", overrides={"budget": {"per_stage": {"diversify": 2}}})
    assert capped.budget.capped and capped.budget.per_stage == {"diversify": 2.0}


def test_a_batch_line_is_admitted_now_left_for_later_or_refused_never_waited_for() -> None:
    """Budget.try_reserve (the batch gate's admission): a job's own lines hold their
    reservations until the job ends, so a line that does not fit must not wait for them."""
    budget = Budget(BudgetConfig(usd=1.0))
    first = budget.try_reserve("synthesize", "Gen", 0.6)
    assert first is not None
    assert budget.try_reserve("synthesize", "Gen", 0.6) is None  # fits once the first settles
    with pytest.raises(BudgetExhausted):
        budget.try_reserve("synthesize", "Gen", 1.5)  # fits never
    budget.settle(first, 0.3)
    assert budget.try_reserve("synthesize", "Gen", 0.6) is not None
    assert budget.spend().spent_usd == pytest.approx(0.3)
