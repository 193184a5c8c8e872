"""Provenance of replies: the model that actually served a call (the response's `model`, not
the configured deployment name), on the reply, its event and its cache entry; over real HTTP
against the fake server, which answers as a dated snapshot like real providers do."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from tests.fake_llm import FakeLlm, Rule, models_config_for, user_messages
from toucan.llm.cache import LlmCache
from toucan.llm.replies import CallMeta, any_embedded, join_names
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.records import Event, LlmCacheEntry
from toucan.store import Store

pytestmark = pytest.mark.anyio
META = CallMeta(run_id="run_p", stage="synthesize", item_id="task_1")


class Draft(BaseModel):
    question: str


async def test_a_reply_and_its_event_name_the_model_the_provider_says_served_it(
    fake_llm: FakeLlm, transport: str
) -> None:
    router = LlmRouter(models_config_for(fake_llm, transport=transport))

    reply = await router.complete("gen-a", user_messages("hi"), meta=META)

    assert reply.deployment == "gen-a" and reply.model == "openai/gen-a"
    assert reply.served_by == "gen-a-2024-07-18"
    assert reply.served_by_embedded is False
    [event] = router.drain_events()
    assert (event.model, event.served_by) == ("gen-a", "gen-a-2024-07-18")


async def test_a_fallback_reply_names_the_deployment_and_model_that_answered(
    fake_llm: FakeLlm,
) -> None:
    fake_llm.script([Rule(model="gen-a", status=400)])
    router = LlmRouter(models_config_for(fake_llm, fallbacks={"gen-a": ["gen-b"]}, max_retries=0))

    reply = await router.complete("gen-a", user_messages("hi"), meta=META)

    assert (reply.deployment, reply.served_by) == ("gen-b", "gen-b-2024-07-18")
    failed, answered = router.drain_events()
    assert (failed.status, failed.served_by) == ("error", None)
    assert (answered.model, answered.served_by) == ("gen-b", "gen-b-2024-07-18")


async def test_a_cached_reply_keeps_the_provenance_of_the_call_that_produced_it(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "toucan.duckdb")
    with FakeLlm(served_model=lambda name: f"{name}-first") as first_server:
        models = models_config_for(first_server)
        first = LlmRouter(models, cache=LlmCache.load(store, run_id="run_1"))
        await complete_structured(first, "gen-a", user_messages("write one"), Draft, meta=META)
        assert first.cache is not None
        store.insert([*first.cache.drain_new(), *first.drain_events()])
    # the same deployment is now served by another snapshot: the stored reply is not its work
    with FakeLlm(served_model=lambda name: f"{name}-second") as second_server:
        rerun = LlmRouter(models_config_for(second_server), cache=LlmCache.load(store))
        _, cached = await complete_structured(
            rerun, "gen-a", user_messages("write one"), Draft, meta=META
        )
        fresh = await rerun.complete("gen-a", user_messages("something new"), meta=META)

    assert cached.cached and cached.served_by == "gen-a-first"
    assert fresh.served_by == "gen-a-second"
    assert [(e.status, e.served_by) for e in rerun.drain_events()] == [
        ("cached", "gen-a-first"),
        ("ok", "gen-a-second"),
    ]
    assert store.select(Event)[0].served_by == "gen-a-first"
    [entry] = store.select(LlmCacheEntry)
    assert entry.reply["served_by"] == "gen-a-first"


async def test_a_reply_cached_before_provenance_was_recorded_reads_as_unknown(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    store = Store(tmp_path / "toucan.duckdb")
    router = LlmRouter(models_config_for(fake_llm), cache=LlmCache.load(store))
    await router.complete("gen-a", user_messages("hi"), meta=META)
    assert router.cache is not None
    [entry] = router.cache.drain_new()
    old_reply = {
        k: v for k, v in entry.reply.items() if k not in ("served_by", "served_by_embedded")
    }
    store.insert([entry.model_copy(update={"reply": old_reply})])

    rerun = LlmRouter(models_config_for(fake_llm), cache=LlmCache.load(store))
    cached = await rerun.complete("gen-a", user_messages("hi"), meta=META)

    assert cached.cached and cached.served_by is None and cached.served_by_embedded is None
    assert fake_llm.calls.total == 1


async def test_the_local_profile_marks_every_reply_as_served_by_the_embedded_model(
    fake_llm: FakeLlm,
) -> None:
    """The fake stands in for the embedded server here (the real one: test_llm_local_model)."""
    models = models_config_for("http://unused")
    models.route_to_local = True
    router = LlmRouter(models, local_base_url=fake_llm.base_url)

    reply = await router.complete("judge-a", user_messages("hi"), meta=META)

    assert reply.served_by_embedded is True
    assert reply.served_by == "judge-a-2024-07-18"  # what the server said, not the config name


def test_names_of_several_replies_are_joined_once_each_in_order_of_first_use() -> None:
    assert join_names(None, "a") == "a"
    assert join_names("a", "b", "a") == "a, b"
    assert join_names("a, b", "c", None) == "a, b, c"
    assert join_names(None, None) is None
    assert any_embedded(None, False) is False
    assert any_embedded(False, True) is True
    assert any_embedded(None) is None


async def test_a_provider_that_names_no_model_leaves_the_served_model_unknown(
    transport: str,
) -> None:
    with FakeLlm(served_model=lambda name: "") as server:
        router = LlmRouter(models_config_for(server, transport=transport))
        reply = await router.complete("gen-a", user_messages("hi"), meta=META)

    assert reply.served_by is None  # not the deployment's name, which would be a guess
    assert [event.served_by for event in router.drain_events()] == [None]
