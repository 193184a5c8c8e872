"""Which deployments take the direct transport, and its session's life on the event loop."""

from __future__ import annotations

import asyncio

import pytest

from tests.fake_llm import FakeLlm, Rule, models_config_for
from toucan.config import ModelDeployment
from toucan.llm.direct import plan_endpoint
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter


def plan(model: str, **fields: object) -> object:
    deployment = ModelDeployment(name="d", model=model, **fields)
    params = {"model": model, **({"api_base": fields["api_base"]} if "api_base" in fields else {})}
    return plan_endpoint(deployment, params, route_to_local=False)


def test_openai_compatible_providers_go_direct_with_their_base_and_bare_model_id() -> None:
    together = plan("together_ai/Qwen/Qwen2-72B-Instruct")
    assert together is not None
    assert together.url == "https://api.together.xyz/v1/chat/completions"
    assert together.model == "Qwen/Qwen2-72B-Instruct"
    served = plan("openai/my-model", api_base="http://127.0.0.1:9/v1/")
    assert served is not None and served.url == "http://127.0.0.1:9/v1/chat/completions"
    assert plan("mistral/mistral-large-latest").url.startswith("https://api.mistral.ai/v1")


def test_other_providers_and_an_explicit_choice_stay_on_litellm() -> None:
    assert plan("anthropic/claude-3-opus-20240229") is None
    assert plan("cohere/command-r-plus") is None
    assert plan("openai/gpt-4o-mini", transport="litellm") is None
    with pytest.raises(ValueError, match="api_base"):
        plan("some-unknown-provider-model", transport="direct")


def test_the_session_is_shared_and_closed_when_the_loop_ends(fake_llm: FakeLlm) -> None:
    fake_llm.script([Rule(text="ok")])
    router = LlmRouter(models_config_for(fake_llm))
    meta = CallMeta(item_id="item_1")

    async def run() -> object:
        messages = [{"role": "user", "content": "hi"}]
        await asyncio.gather(*(router.complete("gen-a", messages, meta=meta) for _ in range(8)))
        return router.transport.session()

    session = asyncio.run(run())
    assert session.closed  # closed by the loop's shutdown, not left for the garbage collector
    again = asyncio.run(run())  # a new loop gets a new session
    assert again is not session and again.closed
    assert fake_llm.calls.total == 16
