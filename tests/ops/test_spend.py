"""A stage run's model guards when its batches run in other processes (Dask, Ray): each batch
gets a pickled copy of the breaker and the budget, and the flow process learns what the batch
spent and paused from the `llm_call` events it returns (flows/spend.py).

The copy is made with pickle, as Prefect's Dask runner makes it; the calls go to the fake model
server over real HTTP.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from flows.spend import ModelGuards
from tests.fake_llm import FakeLlm, Rule, fake_llm, models_config_for
from toucan.config import BudgetConfig, Settings
from toucan.errors import BudgetExhausted, ConfigError, ModelGroupDown, ToucanError
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.records import Event

__all__ = ["fake_llm"]
PRICES = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "params": {"max_tokens": 12}}


def settings_for(fake: FakeLlm, **budget: Any) -> Settings:
    models = models_config_for(fake, generators=("gen-a",), max_retries=4, **PRICES)
    models = models.model_copy(update={"circuit_breaker_failures": 2})
    return Settings(models=models, budget=BudgetConfig(**budget))


def run_batch_elsewhere(guards: ModelGuards, settings: Settings, calls: int) -> list[Event]:
    """A batch of `calls` items on copies of the guards, as a worker process gets them: the
    events it hands back."""
    budget, breaker = pickle.loads(pickle.dumps((guards.budget, guards.breaker)))

    async def batch() -> list[Event]:
        router = LlmRouter(settings.models, budget=budget, breaker=breaker)
        for index in range(calls):
            meta = CallMeta(run_id="run_w", stage="synthesize", item_id=f"i{index}")
            try:
                ask = [{"role": "user", "content": f"question {index}"}]
                await router.complete("generator", ask, meta=meta)
            except ToucanError:
                pass  # the batch makes it an error row; its event is what comes back
        await router.aclose()
        return router.drain_events()

    return asyncio.run(batch())


def test_a_copys_spend_comes_back_in_its_events_and_the_next_copy_starts_from_it(
    fake_llm: FakeLlm,
) -> None:
    uncapped = settings_for(fake_llm)
    probe = ModelGuards(uncapped, "synthesize")
    probe.absorb(run_batch_elsewhere(probe, uncapped, 1))
    cost = probe.report().spent_usd
    assert cost > 0 and probe.budget is None  # no cap: calls pay nothing for counting tokens
    fake_llm.reset()
    # a call reserves ~1.6 calls' cost (its prompt counted by tiktoken, max_tokens 12)
    capped = settings_for(fake_llm, usd=4.7 * cost)
    guards = ModelGuards.open(capped, "synthesize")

    first = run_batch_elsewhere(guards, capped, 3)
    assert guards.stop() is None  # the flow process knows nothing until the events come back
    guards.absorb(first)
    assert guards.report().spent_usd == pytest.approx(3 * cost)
    assert guards.report().spent_by_model == {"gen-a": pytest.approx(3 * cost)}
    # from 3 calls' cost of 4.7, one more fits; a copy starting from $0 would make all 3
    second = run_batch_elsewhere(guards, capped, 3)
    guards.absorb(second)

    assert fake_llm.calls.total == 4
    assert [e.error_class for e in second] == [None, "budget_exhausted", "budget_exhausted"]
    stop = guards.stop()
    assert stop is not None and stop.reason == "budget_exhausted"
    with pytest.raises(BudgetExhausted, match=r"raise budget\.usd"):
        guards.raise_if_stopped(finished=6, failed=2)


def test_a_pause_in_a_copy_comes_back_as_model_unavailable_and_stops_the_run(
    fake_llm: FakeLlm,
) -> None:
    settings = settings_for(fake_llm)
    guards = ModelGuards.open(settings, "synthesize")
    fake_llm.script([Rule(status=503)])

    events = run_batch_elsewhere(guards, settings, 5)
    assert guards.stop() is None
    guards.absorb(events)

    assert fake_llm.calls.total == 2  # the copy's breaker paused gen-a after 2 failures
    stop = guards.stop()
    assert stop is not None and stop.reason == "model_unavailable" and "gen-a" in stop.detail
    with pytest.raises(ModelGroupDown, match="once the provider answers"):
        guards.raise_if_stopped(finished=5, failed=5)
    assert pickle.loads(pickle.dumps(guards.breaker)).paused("gen-a") is not None


def test_a_cap_with_an_unpriced_deployment_refuses_to_open_guards(fake_llm: FakeLlm) -> None:
    models = models_config_for(fake_llm, generators=("gen-a",))  # the fake's names: no price
    with pytest.raises(ConfigError) as refused:
        ModelGuards.open(Settings(models=models, budget=BudgetConfig(usd=1.0)), "synthesize")
    assert refused.value.reason == "unpriced_deployment"
    ModelGuards.open(Settings(models=models), "synthesize")  # no cap: nothing to refuse
