"""What a deployment's tokens cost, and what a call will cost at most, without importing LiteLLM.

A deployment's price, in this order: the config's `input_cost_per_token` /
`output_cost_per_token`; free for the `local` profile (the embedded model answers every
deployment); the table shipped beside this module (`model_prices.json`: the configured models
of defaults.yaml as LiteLLM's local price map prices them, written by
`python -m toucan.llm.prices`, checked against LiteLLM by tests/llm/test_prices.py); else
LiteLLM's price map file itself, read as JSON (~20 ms) rather than through `import litellm`
(~5 s); else unknown (None), which is never taken for $0 by a budget check.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict

from toucan.config import DEFAULTS_FILE, ModelDeployment, ModelsConfig

PRICE_TABLE = Path(__file__).with_name("model_prices.json")
LITELLM_PRICE_MAP = "model_prices_and_context_window_backup.json"  # LiteLLM's local map
# A call that sets no max_tokens on a model whose map entry names no max_output_tokens is
# reserved as if it wrote this many: a common provider default output limit.
UNSET_MAX_TOKENS = 4096
# Without LiteLLM's tokenizers a prompt is counted as bytes of its JSON / 3: tool schemas and
# JSON tokenize denser than the ~4 characters per token of English prose, and a reservation
# that errs high keeps the budget from being crossed.
APPROX_BYTES_PER_TOKEN = 3


class ModelPrice(BaseModel):
    """US dollars per token, and the model's output limit when known."""

    model_config = ConfigDict(frozen=True)

    input_per_token: float
    output_per_token: float
    max_output_tokens: int | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for these token counts."""
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


FREE = ModelPrice(input_per_token=0.0, output_per_token=0.0)


def deployment_price(
    deployment: ModelDeployment, route_to_local: bool = False
) -> ModelPrice | None:
    """The deployment's price (module docstring for the order); None when nobody knows it."""
    if deployment.input_cost_per_token is not None or deployment.output_cost_per_token is not None:
        return ModelPrice(
            input_per_token=deployment.input_cost_per_token or 0.0,
            output_per_token=deployment.output_cost_per_token or 0.0,
        )
    if route_to_local:
        return FREE
    shipped = shipped_prices()
    if deployment.model in shipped:
        return shipped[deployment.model]
    return price_from_map(deployment.model, litellm_price_map())


def unpriced_deployments(models: ModelsConfig) -> list[str]:
    """Names of the configured deployments with no known price, in config order."""
    names = dict.fromkeys(
        d.name for d in models.all() if deployment_price(d, models.route_to_local) is None
    )
    return list(names)


def price_from_map(
    model_string: str, price_map: dict[str, Any], suffix: str = ""
) -> ModelPrice | None:
    """The price LiteLLM's map gives a model string: its own entry, else the entry of the name
    without its provider prefix when that entry belongs to the same provider ("openai/gpt-4o-mini"
    -> "gpt-4o-mini"), as LiteLLM's `cost_per_token` looks it up. `suffix` "_batches" reads the
    batch prices. None when neither names a cost (LiteLLM then counts $0; a budget must not)."""
    entry = price_map.get(model_string)
    prefix, _, bare = model_string.partition("/")
    if entry is None and bare:
        candidate = price_map.get(bare)
        if candidate is not None and candidate.get("litellm_provider") == prefix:
            entry = candidate
    costs = [(entry or {}).get(f"{side}_cost_per_token{suffix}") for side in ("input", "output")]
    if all(cost is None for cost in costs):  # LiteLLM would say $0; we say unknown
        return None
    output_limit = entry.get("max_output_tokens")
    return ModelPrice(
        input_per_token=float(costs[0] or 0.0),
        output_per_token=float(costs[1] or 0.0),
        max_output_tokens=output_limit if isinstance(output_limit, int) else None,
    )


def batch_price(deployment: ModelDeployment, route_to_local: bool = False) -> ModelPrice | None:
    """A deployment's price inside a provider batch job: the config's
    `batch_*_cost_per_token`; else, when no online price is configured either, LiteLLM's map's
    batch prices (`input_cost_per_token_batches`); else the online price x
    `batch_price_factor` (0.5 by default: OpenAI gives "50% cost discount vs. the synchronous
    APIs", Batch API FAQ; Anthropic's Message Batches are "reducing costs by 50%", docs,
    build-with-claude/batch-processing). None when nobody knows the online price."""
    configured = (deployment.batch_input_cost_per_token, deployment.batch_output_cost_per_token)
    if any(price is not None for price in configured):
        return ModelPrice(
            input_per_token=configured[0] or 0.0, output_per_token=configured[1] or 0.0
        )
    online_configured = (deployment.input_cost_per_token, deployment.output_cost_per_token)
    if all(price is None for price in online_configured) and not route_to_local:
        mapped = price_from_map(deployment.model, litellm_price_map(), "_batches")
        if mapped is not None:
            return mapped
    online = deployment_price(deployment, route_to_local)
    if online is None:
        return None
    factor = deployment.batch_price_factor
    return online.model_copy(
        update={
            "input_per_token": online.input_per_token * factor,
            "output_per_token": online.output_per_token * factor,
        }
    )


@functools.cache
def shipped_prices() -> dict[str, ModelPrice | None]:
    """The shipped table: model string -> price, None where LiteLLM's map has none."""
    raw = orjson.loads(PRICE_TABLE.read_bytes())
    return {
        model: None if value is None else ModelPrice.model_validate(value)
        for model, value in raw.items()
    }


@functools.cache
def litellm_price_map() -> dict[str, Any]:
    """LiteLLM's local price map as JSON, found without importing LiteLLM; {} when absent."""
    spec = importlib.util.find_spec("litellm")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / LITELLM_PRICE_MAP
        if path.exists():
            return orjson.loads(path.read_bytes())
    return {}


def count_prompt_tokens(
    model_string: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> int:
    """Prompt tokens of a request: LiteLLM's `token_counter` (the model's tokenizer where
    LiteLLM has one) when LiteLLM is already loaded, else bytes of the JSON / 3 (see
    APPROX_BYTES_PER_TOKEN). LiteLLM is never imported for this alone."""
    litellm = sys.modules.get("litellm")
    if litellm is not None:
        try:
            return int(litellm.token_counter(model=model_string, messages=messages, tools=tools))
        except Exception:  # a message shape its counter does not know: fall back
            pass
    return approximate_prompt_tokens(messages, tools)


def describe_tokenizer(model_string: str, own_tokenizer: bool) -> str:
    """Which tokenizer `count_prompt_tokens` counts `model_string`'s prompts with: LiteLLM's
    Hugging Face tokenizer of the model's family, else a tiktoken encoding, which is the
    model's own only when `own_tokenizer` (an OpenAI model on OpenAI's endpoint); anything
    else is marked an approximation."""
    if sys.modules.get("litellm") is None:
        return f"JSON bytes / {APPROX_BYTES_PER_TOKEN} (approximation)"
    try:  # LiteLLM's own choice, as token_counter makes it (module paths of LiteLLM 1.110)
        from litellm.litellm_core_utils.token_counter import openai_tokenizer_encoding_name
        from litellm.utils import huggingface_tokenizer_kind

        family = huggingface_tokenizer_kind(model_string)
        encoding = openai_tokenizer_encoding_name(model_string)
    except Exception:  # another LiteLLM layout: its counter still counts, we cannot say how
        return "LiteLLM token_counter (approximation)"
    if family:
        return f"{family} (Hugging Face)"
    return f"tiktoken {encoding}" + ("" if own_tokenizer else " (approximation)")


def approximate_prompt_tokens(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> int:
    """Prompt tokens without a tokenizer: bytes of the request's JSON / APPROX_BYTES_PER_TOKEN."""
    size = len(orjson.dumps({"messages": messages, "tools": tools or []}))
    return math.ceil(size / APPROX_BYTES_PER_TOKEN)


def completion_allowance(request: dict[str, Any], price: ModelPrice | None) -> int:
    """The most completion tokens a request can be billed for: its max_tokens, else the
    model's output limit, else UNSET_MAX_TOKENS."""
    for key in ("max_completion_tokens", "max_tokens"):
        if isinstance(request.get(key), int):
            return request[key]
    if price is not None and price.max_output_tokens:
        return price.max_output_tokens
    return UNSET_MAX_TOKENS


def build_price_table(models: ModelsConfig) -> dict[str, dict[str, Any] | None]:
    """The shipped table for these models, asked of LiteLLM itself (imports it)."""
    from toucan.llm.providers import load_litellm

    litellm = load_litellm()
    table: dict[str, dict[str, Any] | None] = {}
    for deployment in models.all():
        try:
            input_cost, _ = litellm.cost_per_token(model=deployment.model, prompt_tokens=1)
            _, output_cost = litellm.cost_per_token(
                model=deployment.model, prompt_tokens=0, completion_tokens=1
            )
            limit = litellm.get_model_info(deployment.model).get("max_output_tokens")
        except Exception:  # LiteLLM has no price for it
            table[deployment.model] = None
            continue
        price = ModelPrice(
            input_per_token=input_cost, output_per_token=output_cost, max_output_tokens=limit
        )
        table[deployment.model] = price.model_dump()
    return dict(sorted(table.items()))


def default_models() -> ModelsConfig:
    """The model groups of the embedded defaults (defaults.yaml), whatever file is in force."""
    return ModelsConfig.model_validate(yaml.safe_load(DEFAULTS_FILE.read_text())["models"])


if __name__ == "__main__":
    table = build_price_table(default_models())
    PRICE_TABLE.write_bytes(orjson.dumps(table, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {PRICE_TABLE} ({len(table)} models)")
