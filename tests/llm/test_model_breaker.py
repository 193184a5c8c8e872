"""A model outage: after N failed requests in a row a deployment is paused for the run, and
calls with no live deployment fail at once as `model_unavailable` without being sent.

Against the fake model server over real HTTP, both transports; issue 15, fault 5.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests.fake_llm import FakeLlm, Rule, models_config_for
from toucan.errors import LlmError, ModelGroupDown, ToucanError
from toucan.llm.breaker import ModelBreaker
from toucan.llm.replies import CallMeta, LlmReply
from toucan.llm.router import LlmRouter

pytestmark = pytest.mark.anyio
HANG_GUARD_S = 30  # an outage must never hold a call this long (the old code: minutes)


def ask(index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {index}"}]


async def run_items(router: LlmRouter, target: str, count: int) -> list[Any]:
    async def one(index: int) -> LlmReply | BaseException:
        meta = CallMeta(run_id="run_o", stage="filter_tasks", item_id=f"item_{index}")
        try:
            return await router.complete(target, ask(index), meta=meta, use_cache=False)
        except ToucanError as error:
            return error

    async with asyncio.timeout(HANG_GUARD_S):
        return list(await asyncio.gather(*(one(index) for index in range(count))))


async def test_an_outage_pauses_the_deployment_after_n_requests_and_fails_every_pending_call(
    fake_llm: FakeLlm, transport: str
) -> None:
    fake_llm.script([Rule(status=503)])
    models = models_config_for(
        fake_llm, transport=transport, max_retries=5, max_concurrency=1, judge=("judge-a",)
    )
    models = models.model_copy(update={"circuit_breaker_failures": 3})
    router = LlmRouter(models)

    results = await run_items(router, "judge", 30)

    # one request at a time: the third failure pauses the deployment, nothing is sent after it
    assert fake_llm.calls.total == 3
    assert all(isinstance(r, ModelGroupDown) for r in results)
    assert {r.reason for r in results} == {"model_unavailable"}
    assert router.breaker.paused("judge-a") is not None
    assert router.breaker.paused("judge-a").reason == "model_server_error"
    events = router.drain_events()
    assert len(events) == 30 and {e.error_class for e in events} <= {
        "model_unavailable",
        "model_server_error",
    }


async def test_calls_in_flight_when_the_breaker_opens_stop_retrying(fake_llm: FakeLlm) -> None:
    fake_llm.script([Rule(status=503)])
    models = models_config_for(fake_llm, max_retries=5, max_concurrency=4)
    models = models.model_copy(update={"circuit_breaker_failures": 5})
    router = LlmRouter(models)

    results = await run_items(router, "teacher", 40)

    # at most the requests already on the wire when the fifth failure came back
    assert fake_llm.calls.total <= 5 + 3
    assert {getattr(r, "reason", None) for r in results} == {"model_unavailable"}


async def test_a_group_keeps_working_on_its_live_deployment(fake_llm: FakeLlm) -> None:
    fake_llm.script([Rule(model="gen-a", status=502)])
    models = models_config_for(fake_llm, max_retries=1, generators=("gen-a", "gen-b"))
    models = models.model_copy(update={"circuit_breaker_failures": 2})
    router = LlmRouter(models)
    picked = [router.pick_deployment("generator", f"item_{index}") for index in range(20)]
    assert "gen-a" in picked  # items drawn for the failing deployment

    replies = []
    for index in range(20):
        meta = CallMeta(item_id=f"item_{index}")
        replies.append(await router.complete("generator", ask(index), meta=meta))

    assert router.breaker.paused("gen-a") is not None and router.breaker.paused("gen-b") is None
    # the first item drawn for gen-a: its request and its retry fail, it is answered by gen-b
    assert fake_llm.calls.by_model["gen-a"] == 2
    assert {reply.deployment for reply in replies} == {"gen-b"}


async def test_rate_limits_and_rejected_requests_do_not_pause_a_deployment(
    fake_llm: FakeLlm,
) -> None:
    fake_llm.script(
        [
            Rule(times=4, status=429, retry_after=0.05),
            Rule(contains="bad", status=400),
        ]
    )
    models = models_config_for(fake_llm, max_retries=0)
    models = models.model_copy(update={"circuit_breaker_failures": 2})
    router = LlmRouter(models)

    for _ in range(3):
        with pytest.raises(LlmError) as caught:
            await router.complete("gen-a", [{"role": "user", "content": "bad request"}])
        assert caught.value.reason == "model_request_rejected"
    reply = await router.complete("gen-a", ask(1))

    assert reply.text == "ok" and router.breaker.paused("gen-a") is None


async def test_a_success_resets_the_count_of_failures_in_a_row(fake_llm: FakeLlm) -> None:
    fake_llm.script([Rule(on_calls={0, 2, 4, 6}, status=500)])
    models = models_config_for(fake_llm, max_retries=0)
    models = models.model_copy(update={"circuit_breaker_failures": 2})
    router = LlmRouter(models)

    outcomes = []
    for index in range(8):
        try:
            outcomes.append((await router.complete("gen-a", ask(index), use_cache=False)).text)
        except LlmError as error:
            outcomes.append(error.reason)

    assert outcomes == ["model_server_error", "ok"] * 4
    assert router.breaker.paused("gen-a") is None


def test_routers_in_two_threads_share_one_breaker(fake_llm: FakeLlm) -> None:
    fake_llm.script([Rule(status=503)])
    models = models_config_for(fake_llm, max_retries=5, max_concurrency=2)
    breaker = ModelBreaker(threshold=4)
    reasons: list[str] = []
    lock = threading.Lock()

    def batch() -> None:
        async def run() -> list[Any]:
            router = LlmRouter(models, breaker=breaker)
            try:
                return await run_items(router, "teacher-a", 20)
            finally:
                await router.aclose()

        results = asyncio.run(run())
        with lock:
            reasons.extend(getattr(r, "reason", "answered") for r in results)

    threads = [threading.Thread(target=batch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD_S)

    assert len(reasons) == 40 and set(reasons) == {"model_unavailable"}
    assert fake_llm.calls.total <= 4 + 2 * 2 - 1  # the threshold, plus what was on the wire
