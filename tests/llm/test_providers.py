"""Reading a model string's provider without LiteLLM, and a model layer that never loads it on
the direct transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_llm import FakeLlm
from tests.fresh_python import run_python
from toucan.llm.prices import litellm_price_map
from toucan.llm.providers import KNOWN_PREFIXES, UnknownProvider, load_litellm, split_provider

DIRECT_RUN = """
import asyncio, sys
from toucan.config import load_settings
from toucan.llm.budget import Budget, check_budget_prices
from toucan.llm.router import LlmRouter
from toucan.llm.tool_rules import rules_for

settings = load_settings(sys.argv[1])
check_budget_prices(settings.budget, settings.models)
rules_for(settings.models, "bench")

async def main():
    router = LlmRouter(settings.models, budget=Budget(settings.budget))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    reply = await router.complete("judge", [{"role": "user", "content": "hi"}], tools=tools)
    assert reply.text == "ok" and reply.cost_usd > 0, reply
    await router.aclose()

asyncio.run(main())
loaded = sorted(name for name in ("litellm", "openai", "duckdb", "polars") if name in sys.modules)
print(",".join(loaded) or "none")
"""


def test_known_prefixes_are_split_as_litellm_splits_them() -> None:
    litellm = load_litellm()
    models = {
        key
        if key.startswith(f"{entry['litellm_provider']}/")
        else f"{entry['litellm_provider']}/{key}"
        for key, entry in litellm_price_map().items()
        if isinstance(entry, dict) and entry.get("litellm_provider") in KNOWN_PREFIXES
    }
    models |= {"openai/my-model", "hosted_vllm/org/model", "openrouter/anthropic/claude-3.5"}
    assert len(models) > 500

    disagree = []
    for model in sorted(models):
        for api_base in (None, "http://127.0.0.1:9/v1"):
            theirs = litellm.get_llm_provider(model, api_base=api_base)[:2]
            if split_provider(model, api_base)[:2] != theirs:
                disagree.append((model, api_base, theirs))
    assert disagree == []


def test_a_string_no_provider_claims_is_an_unknown_provider() -> None:
    with pytest.raises(UnknownProvider):
        split_provider("some-unknown-provider-model")


def test_the_direct_transport_never_loads_litellm_or_the_openai_sdk(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    """A whole call (settings, budget check, tool rules, router, reply, price) in a fresh
    interpreter: LiteLLM (~5 s to import), the OpenAI SDK (~1 s) and the store's DuckDB and
    polars stay unloaded."""
    deployment = (
        '{name: bench, model: "openai/gpt-4o-mini", '
        f"api_base: {fake_llm.base_url}, max_retries: 0}}"
    )
    config = tmp_path / "toucan.yaml"
    config.write_text(
        "profile: cloud\nbudget: {usd: 1.0}\nmodels:\n"
        f"  generators: [{deployment}]\n  teachers: [{deployment}]\n  judge: [{deployment}]\n"
    )

    done = run_python(DIRECT_RUN, str(config), timeout=240)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
    assert fake_llm.calls.total == 1
