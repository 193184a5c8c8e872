"""Batches running at once each have their own router; together they must stay within the
deployment's limits. Measured at the fake server: the most requests it saw at once."""

from __future__ import annotations

import asyncio
import threading

from tests.fake_llm import FakeLlm, models_config_for
from toucan.config import ModelsConfig
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter


def run_batch(models: ModelsConfig, requests: int) -> None:
    """One batch: its own router on its own event loop in its own thread, like a Prefect task."""

    async def batch() -> None:
        router = LlmRouter(models)
        await asyncio.gather(
            *(
                router.complete(
                    "teacher-a",
                    [{"role": "user", "content": f"question {index}"}],
                    meta=CallMeta(item_id=f"{threading.get_ident()}-{index}"),
                    use_cache=False,
                )
                for index in range(requests)
            )
        )
        await router.aclose()

    asyncio.run(batch())


def peak_of_two_batches(fake_llm: FakeLlm, models: ModelsConfig) -> int:
    fake_llm.reset()
    threads = [threading.Thread(target=run_batch, args=(models, 8)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert fake_llm.calls.total == 16
    return fake_llm.calls.peak_in_flight


def test_two_batches_sharing_a_deployment_stay_within_its_concurrency(fake_llm: FakeLlm) -> None:
    fake_llm.latency = 0.3
    models = models_config_for(fake_llm, max_concurrency=4)
    assert peak_of_two_batches(fake_llm, models.shared_by(2)) <= 4
    assert peak_of_two_batches(fake_llm, models) > 4  # each batch alone would allow 4


def test_shared_limits_divide_rpm_tpm_and_concurrency_but_never_below_one(
    fake_llm: FakeLlm,
) -> None:
    models = models_config_for(fake_llm, rpm=100, tpm=9000, max_concurrency=3)
    (half,) = models.shared_by(2).teachers
    assert (half.rpm, half.tpm, half.max_concurrency) == (50, 4500, 1)
    (tiny,) = models_config_for(fake_llm, rpm=1).shared_by(8).teachers
    assert tiny.rpm == 1
    assert models.shared_by(1) is models
