"""Shared set-up of the batch tests: deployments on the fake server, items, one batch run.

Also a script: `python -m tests.llm.batch_helpers BASE_URL STORE RUN_ID COUNT PROVIDER` runs one
batch of COUNT items in its own process (a test kills it mid-submit).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tests.fake_llm import FakeLlm, models_config_for
from toucan.config import BatchApiConfig, ModelsConfig
from toucan.llm.batch_items import BatchItem, Outcome
from toucan.llm.batch_ledger import BatchLedger
from toucan.llm.batch_runner import BatchRunner
from toucan.llm.cache import LlmCache
from toucan.llm.parsing import response_format_for
from toucan.llm.router import LlmRouter
from toucan.records import Event
from toucan.store import Store

STAGE = "filter_tasks"
INPUT_PRICE = 1e-6
OUTPUT_PRICE = 2e-6
# quick status checks; a generous window unless a test shortens it
FAST = BatchApiConfig(poll_initial_s=0.01, poll_max_s=0.05, max_wait_s=120, cancel_wait_s=10)


class Verdict(BaseModel):
    reasoning: str
    score: int


def batch_models(
    server: FakeLlm | str, config: BatchApiConfig = FAST, provider: str = "openai", **fields: Any
) -> ModelsConfig:
    """Every deployment on the fake server, with a batch API and a price per token; as
    `anthropic/` models on its Messages API and Message Batches when `provider` says so."""
    fields = {
        "supports_batch": True,
        "input_cost_per_token": INPUT_PRICE,
        "output_cost_per_token": OUTPUT_PRICE,
        **fields,
    }
    models = models_config_for(server, **fields).model_copy(update={"batch": config})
    if provider == "anthropic":
        models = models.model_copy(
            update={
                group: [
                    d.model_copy(
                        update={
                            "model": f"anthropic/{d.name}",
                            "api_base": (d.api_base or "").removesuffix("/v1"),
                        }
                    )
                    for d in getattr(models, group)
                ]
                for group in ("generators", "teachers", "judge")
            }
        )
    return models


def judge_items(count: int, *, prefix: str = "task") -> list[BatchItem]:
    """Structured requests as a judge stage makes them: one per task, a JSON schema each."""
    return [
        BatchItem(
            item_id=f"{prefix}_{index}",
            messages=[
                {"role": "system", "content": "Rate the task."},
                {"role": "user", "content": f"{prefix} number {index}"},
            ],
            response_format=response_format_for(Verdict),
            params={"temperature": 0},
        )
        for index in range(count)
    ]


async def run_batch(
    models: ModelsConfig,
    store: Store,
    items: list[BatchItem],
    *,
    run_id: str = "run_1",
    target: str = "judge",
    cache: LlmCache | None = None,
) -> tuple[dict[str, Outcome], list[Event]]:
    """One batch run on a fresh router: every item's outcome, and the run's events."""
    router = LlmRouter(models, cache=cache)
    try:
        runner = BatchRunner(router, BatchLedger(store), run_id=run_id, stage=STAGE)
        outcomes = await runner.run(target, items)
    finally:
        await router.aclose()
    return outcomes, router.drain_events()


if __name__ == "__main__":
    base_url, store_path, run, count, provider = sys.argv[1:6]
    asyncio.run(
        run_batch(
            batch_models(base_url, provider=provider),
            Store(Path(store_path)),
            judge_items(int(count)),
            run_id=run,
        )
    )
