"""Prices without LiteLLM: the shipped table and the reading of LiteLLM's map agree with LiteLLM."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from toucan.config import ModelDeployment
from toucan.llm.prices import (
    FREE,
    PRICE_TABLE,
    approximate_prompt_tokens,
    build_price_table,
    completion_allowance,
    default_models,
    deployment_price,
    litellm_price_map,
    price_from_map,
)
from toucan.llm.providers import KNOWN_PREFIXES, load_litellm

# the providers a toucan deployment names (others, e.g. github_copilot, log in over the network
# as soon as LiteLLM is asked about them)
CHECKED_PROVIDERS = {*KNOWN_PREFIXES, "azure", "cohere_chat", "bedrock"}


def litellm_price(model: str) -> tuple[float, float] | None:
    """What LiteLLM itself says a token of `model` costs; None when it has no price."""
    litellm = load_litellm()
    try:
        input_cost, _ = litellm.cost_per_token(model=model, prompt_tokens=1)
        _, output_cost = litellm.cost_per_token(model=model, prompt_tokens=0, completion_tokens=1)
    except Exception:
        return None
    return input_cost, output_cost


def test_the_shipped_table_is_what_litellms_price_map_says_for_the_configured_models() -> None:
    shipped = orjson.loads(PRICE_TABLE.read_bytes())
    assert shipped == build_price_table(default_models()), (
        "LiteLLM's price map changed: run `python -m toucan.llm.prices` to rewrite the table"
    )
    assert set(shipped) == {d.model for d in default_models().all()}
    assert shipped["openai/gpt-4o-mini"] is not None  # the default judge is priced


def test_reading_litellms_map_prices_every_model_litellm_prices_the_same() -> None:
    """Over the chat models of the providers toucan users configure, bare and with their
    provider prefix. Where LiteLLM's `cost_per_token` cannot resolve a model its own map
    lists (e.g. `anyscale/...`), the map entry's price is used: only that may differ."""
    price_map = litellm_price_map()
    chat = [
        key
        for key, entry in price_map.items()
        if isinstance(entry, dict)
        and entry.get("mode") == "chat"
        and entry.get("litellm_provider") in CHECKED_PROVIDERS
        # LiteLLM prices these by the hour of the day (a discount off peak); ours is the
        # standard price, an upper bound a budget can rely on at any hour
        and "off_peak_pricing" not in entry
    ]
    prefixed = [f"{price_map[key]['litellm_provider']}/{key}" for key in chat if "/" not in key]
    models = [*chat, *prefixed, "openai/no-such-model", "together_ai/nobody/nothing"]
    assert len(chat) > 500  # the map was found and read

    disagree = []
    for model in models:
        ours = price_from_map(model, price_map)
        theirs = litellm_price(model)
        ours_pair = None if ours is None else (ours.input_per_token, ours.output_per_token)
        if theirs is not None and (ours_pair or (0.0, 0.0)) != pytest.approx(theirs):
            disagree.append((model, ours_pair, theirs))  # unknown to us: $0 to LiteLLM
        if theirs is None and ours is not None:
            assert model in price_map or model.partition("/")[2] in price_map
    assert disagree == []


def test_config_prices_win_the_local_profile_is_free_and_an_unknown_price_stays_unknown() -> None:
    priced = ModelDeployment(name="judge", model="openai/gpt-4o-mini", input_cost_per_token=3e-6)
    listed = ModelDeployment(name="judge", model="openai/gpt-4o-mini")
    unknown = ModelDeployment(name="mine", model="openai/my-model", api_base="http://x/v1")

    assert deployment_price(priced) == FREE.model_copy(update={"input_per_token": 3e-6})
    assert deployment_price(listed).input_per_token == pytest.approx(1.5e-7)
    assert deployment_price(listed).max_output_tokens == 16384
    assert deployment_price(unknown) is None
    assert deployment_price(unknown, route_to_local=True) == FREE


def test_a_call_is_reserved_for_its_max_tokens_else_the_models_output_limit() -> None:
    listed = deployment_price(ModelDeployment(name="judge", model="openai/gpt-4o-mini"))
    assert completion_allowance({"max_tokens": 300}, listed) == 300
    assert completion_allowance({"max_completion_tokens": 50, "max_tokens": 9}, listed) == 50
    assert completion_allowance({}, listed) == 16384
    assert completion_allowance({}, None) == 4096


def test_the_approximate_count_errs_high_against_a_real_tokenizer() -> None:
    """Without LiteLLM loaded a reservation counts bytes / 3; it must not undercount what
    OpenAI's tokenizer (through LiteLLM's `token_counter`) makes of real prompts and schemas."""
    litellm = load_litellm()
    prompts = Path(__file__).resolve().parents[2] / "prompts"
    tools = [
        {
            "type": "function",
            "function": {
                "name": "sqlite__read_query",
                "description": "Execute a SELECT query on the SQLite database",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string", "description": "SELECT SQL"}},
                    "required": ["query"],
                },
            },
        }
    ]
    for template in sorted(prompts.glob("*/*.j2")):
        messages = [
            {"role": "system", "content": template.read_text()},
            {"role": "user", "content": "Which five customers ordered the most in 2023?"},
        ]
        counted = litellm.token_counter(model="gpt-4o-mini", messages=messages, tools=tools)
        approximate = approximate_prompt_tokens(messages, tools)
        assert counted <= approximate < 3 * counted, template.name
