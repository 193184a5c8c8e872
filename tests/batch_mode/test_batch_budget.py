"""A budget cap on a stage in batch mode, end to end over the fake server's batch endpoints and a
real DuckDB file: the stage stops within one line's cost of the cap, the lines not sent are
`budget_exhausted` (retryable) and the stage ends non-green; the rerun with a higher cap sends
only those, so the two runs together send exactly a clean run's requests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.runner import run_stage_async
from tests.batch_mode.helpers import batch_config
from tests.fake_llm import FakeLlm
from tests.synthesize.seed import fake_settings, seed_servers
from toucan.errors import RETRYABLE_REASONS, BudgetExhausted
from toucan.records import BatchRequest, Run, Task
from toucan.store import Store

ITEMS = 12
SEED = 4
# the competent generator's reply is ~90 tokens: a line's reservation stays close to its cost
MAX_TOKENS = 150


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch mode loads LiteLLM, whose token counter then looks for a Llama tokenizer on the
    Hugging Face Hub to price each line's reservation: with no network that lookup takes ~35 s
    of retries before it falls back to tiktoken, so the tests say offline up front."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def capped_config(path: Path, base_url: str, provider: str) -> Path:
    """Batch mode, every deployment priced and replying in at most MAX_TOKENS."""
    batch_config(path, base_url, provider=provider)
    config = yaml.safe_load(path.read_text())
    for group in ("generators", "teachers", "judge"):
        for deployment in config["models"][group]:
            deployment.setdefault("params", {})["max_tokens"] = MAX_TOKENS
    path.write_text(yaml.safe_dump(config))
    return path


def synthesize(config: Path, store: Store, **overrides: Any) -> Any:
    """One synthesize run. Every task has a row: `ok`, or `rejected` as a near-duplicate
    (Anthropic drops the `seed` that sets the fake generator's tasks apart)."""
    settings = fake_settings(config, **overrides)
    return asyncio.run(run_stage_async("synthesize", settings, store, limit=ITEMS, seed=SEED))


def fresh_store(path: Path) -> Store:
    store = Store(path)
    seed_servers(store)
    return store


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_cap_at_half_a_batch_stage_stops_near_it_and_the_rerun_sends_only_the_rest(
    tmp_path: Path, fake_llm: FakeLlm, provider: str
) -> None:
    config = capped_config(tmp_path / "toucan.yaml", fake_llm.base_url, provider)
    clean = synthesize(config, fresh_store(tmp_path / "clean.duckdb"))
    counts = fake_llm.batches.counts
    clean_requests, clean_calls = counts.requests_received, fake_llm.calls.total
    assert clean.by_status.get("ok", 0) >= ITEMS - 1 and "error" not in clean.by_status
    assert clean_requests == clean_calls == ITEMS
    line_cost = clean.spent_usd / ITEMS  # at the batch price
    cap = clean.spent_usd / 2
    store = fresh_store(tmp_path / "capped.duckdb")

    with pytest.raises(BudgetExhausted) as stopped:
        synthesize(config, store, budget={"usd": cap})

    assert "raise budget.usd" in str(stopped.value)
    run = max(store.select(Run), key=lambda row: row.started_at)
    first = run.summary
    assert run.status == "failed" and first["stopped"] == "budget_exhausted"  # not green
    done = store.count(Task, "status != 'error'")
    sent = counts.requests_received - clean_requests
    assert 3 <= done <= 9 and sent == done  # a line the cap refuses is never sent
    assert store.count(BatchRequest) == done
    # spent no more than the cap, and stopped within one line's cost of it
    assert first["spent_usd"] <= cap and cap - first["spent_usd"] < 2 * line_cost
    left = store.select(Task, "status = 'error'")
    assert len(left) == ITEMS - done and {t.reason for t in left} == {"budget_exhausted"}
    assert "budget_exhausted" in RETRYABLE_REASONS

    rerun = synthesize(config, store, budget={"usd": 10 * cap})

    assert rerun.stopped is None and store.count(Task, "status != 'error'") == ITEMS
    # over both runs: exactly a clean run's requests, each answered once
    assert counts.requests_received - clean_requests == clean_requests
    assert fake_llm.calls.total - clean_calls == clean_calls
    assert first["spent_usd"] + rerun.spent_usd == pytest.approx(clean.spent_usd, abs=2e-6)
    print(f"{provider}: cap ${cap:.6f}, stopped at ${first['spent_usd']:.6f}, {done} of {ITEMS}")
