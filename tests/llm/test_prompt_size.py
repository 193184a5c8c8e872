"""Issue 15, fault 7: a prompt that cannot fit its model's context window fails at once as
`prompt_too_large`: final, never sent, nothing reserved, not counted by the breaker; a
fallback with a larger window answers it (toucan/llm/prompt_size.py)."""

from __future__ import annotations

import pytest

from tests.fake_llm import FakeLlm, models_config_for, user_messages
from toucan.config import BudgetConfig, LocalModelConfig, ModelDeployment
from toucan.errors import RETRYABLE_REASONS, PromptTooLarge
from toucan.llm.budget import Budget
from toucan.llm.prompt_size import check_prompt_size, context_window, count_tokens
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter

pytestmark = pytest.mark.anyio
PRICES = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
FIVE_MB = "lorem ipsum dolor sit amet " * (5 * 2**20 // 27)


async def test_a_5_mb_prompt_is_refused_unsent_unreserved_and_uncounted(fake_llm: FakeLlm):
    models = models_config_for(fake_llm, context_tokens=128_000, **PRICES)
    models = models.model_copy(update={"circuit_breaker_failures": 1})
    budget = Budget(BudgetConfig(usd=10.0))
    router = LlmRouter(models, budget=budget)
    meta = CallMeta(run_id="run_p", stage="synthesize", item_id="big")

    with pytest.raises(PromptTooLarge) as caught:
        await router.complete("gen-a", user_messages(FIVE_MB), meta=meta)

    assert caught.value.reason == "prompt_too_large" not in RETRYABLE_REASONS
    assert fake_llm.calls.total == 0
    spend = budget.spend()
    assert spend.reserved_usd == 0 and spend.spent_usd == 0 and spend.calls == 0
    assert router.breaker.paused("gen-a") is None  # one failure would have paused it
    [event] = router.drain_events()
    assert (event.status, event.error_class, event.model) == ("error", "prompt_too_large", "gen-a")
    reply = await router.complete("gen-a", user_messages("a short question"), meta=meta)
    assert reply.text and fake_llm.calls.total == 1
    await router.aclose()


async def test_a_fallback_with_a_larger_window_answers_what_the_first_cannot_hold(
    fake_llm: FakeLlm,
) -> None:
    models = models_config_for(fake_llm, generators=("small", "large"))
    small, large = models.generators
    models = models.model_copy(
        update={
            "generators": [
                small.model_copy(update={"context_tokens": 1_000, "weight": 1.0}),
                large.model_copy(update={"context_tokens": 1_000_000, "weight": 0.0}),
            ],
            "fallbacks": {"small": ["large"]},
        }
    )
    router = LlmRouter(models)

    reply = await router.complete("small", user_messages("word " * 5_000))

    assert reply.deployment == "large" and fake_llm.calls.by_model == {"large": 1}
    await router.aclose()


def test_the_reply_room_counts_and_a_prompt_whose_bytes_fit_is_not_tokenized() -> None:
    request = {"messages": user_messages("word " * 900)}  # ~900 tokens, 4,500 bytes
    check_prompt_size(request, 1_000, "d")
    with pytest.raises(PromptTooLarge):
        check_prompt_size({**request, "max_tokens": 200}, 1_000, "d")
    check_prompt_size({**request, "max_tokens": 200}, 1_000, "d", reply_room=False)
    check_prompt_size({"messages": user_messages(FIVE_MB)}, None, "d")  # unknown window: unchecked
    tokens = count_tokens(["word " * 900], messages=1)
    assert 900 <= tokens <= 910


def test_the_window_comes_from_the_deployment_the_local_model_or_litellms_map() -> None:
    models = models_config_for("http://127.0.0.1:9")
    known = ModelDeployment(name="m", model="openai/gpt-4o-mini")
    unknown = ModelDeployment(name="u", model="openai/some-model-nobody-knows")
    assert context_window(known, known.model, models) == 128_000
    assert context_window(unknown, unknown.model, models) is None
    pinned = unknown.model_copy(update={"context_tokens": 4_096})
    assert context_window(pinned, pinned.model, models) == 4_096
    local = models.model_copy(
        update={"route_to_local": True, "local": LocalModelConfig(n_ctx=8_192)}
    )
    assert context_window(unknown, "openai/u", local) == 8_192
