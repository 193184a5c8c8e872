"""Structured output (repair, unparseable) and the response cache, over real HTTP and DuckDB."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import BaseModel

from tasks.llm_batch import ProgressCounter
from tests.fake_llm import FakeLlm, Rule, models_config_for, user_messages
from toucan.errors import UnparseableReply
from toucan.llm import cache as cache_module
from toucan.llm.cache import LlmCache, make_cache_key
from toucan.llm.parsing import find_json_value
from toucan.llm.replies import CallMeta, LlmReply
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.records import Event, LlmCacheEntry
from toucan.store import Store

pytestmark = pytest.mark.anyio
META = CallMeta(run_id="run_test", stage="filter_tasks", item_id="task_1")


class Scores(BaseModel):
    reasoning: str
    quality: int


def test_json_is_found_in_fences_and_prose() -> None:
    assert find_json_value('```json\n{"a": 1}\n```') == {"a": 1}
    assert find_json_value('Here it is: {"a": {"b": [1, 2]}} hope it helps') == {"a": {"b": [1, 2]}}
    with pytest.raises(ValueError):
        find_json_value("no json here {oops")


async def test_prose_gets_one_repair_then_raises_unparseable_with_the_raw_text(
    fake_llm: FakeLlm,
) -> None:
    fake_llm.script([Rule(text="The task looks fine to me, I would rate it highly.")])
    router = LlmRouter(models_config_for(fake_llm), cache=LlmCache())

    with pytest.raises(UnparseableReply) as caught:
        await complete_structured(router, "judge", user_messages("rate this"), Scores, meta=META)

    assert caught.value.reason == "unparseable_reply"
    assert caught.value.raw == "The task looks fine to me, I would rate it highly."
    assert fake_llm.calls.total == 2  # the ask and one repair
    repair = fake_llm.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": caught.value.raw}
    assert "not valid JSON" in repair[-1]["content"]
    assert router.cache is not None and router.cache.drain_new() == []  # failures not cached


async def test_json_missing_fields_is_repaired_when_the_model_fixes_it(fake_llm: FakeLlm) -> None:
    fake_llm.script([Rule(times=1, answer={"quality": 4})])
    router = LlmRouter(models_config_for(fake_llm), cache=LlmCache())

    scores, _ = await complete_structured(
        router, "judge", user_messages("rate this"), Scores, meta=META
    )

    assert scores == Scores(reasoning="x", quality=1)  # the fake's schema-following default
    assert "reasoning" in fake_llm.requests[1]["messages"][-1]["content"]
    assert [event.status for event in router.drain_events()] == ["ok", "ok"]
    # the repaired reply answers the original request next time, for free
    again, cached = await complete_structured(
        router, "judge", user_messages("rate this"), Scores, meta=META
    )
    assert again == scores and cached.cached and fake_llm.calls.total == 2


async def test_json_missing_fields_twice_raises_unparseable(fake_llm: FakeLlm) -> None:
    fake_llm.script([Rule(answer={"quality": 4})])
    router = LlmRouter(models_config_for(fake_llm))

    with pytest.raises(UnparseableReply) as caught:
        await complete_structured(router, "judge", user_messages("rate this"), Scores, meta=META)

    assert caught.value.raw == '{"quality": 4}'


async def test_a_stored_reply_is_served_on_the_rerun_without_a_model_call(
    fake_llm: FakeLlm, tmp_path: Path, transport: str
) -> None:
    store = Store(tmp_path / "toucan.duckdb")
    models = models_config_for(fake_llm, transport=transport)
    first = LlmRouter(models, cache=LlmCache.load(store, run_id="run_1"))
    scores, _ = await complete_structured(
        first, "generator", user_messages("rate this"), Scores, meta=META
    )
    assert first.cache is not None
    store.insert([*first.cache.drain_new(), *first.drain_events()])
    assert store.count(LlmCacheEntry) == 1 and fake_llm.calls.total == 1

    rerun = LlmRouter(models, cache=LlmCache.load(store, run_id="run_2"))
    meta = META.model_copy(update={"run_id": "run_2"})
    again, reply = await complete_structured(
        rerun, "generator", user_messages("rate this"), Scores, meta=meta
    )
    plain = await rerun.complete("generator", user_messages("something new"), meta=meta)
    plain_again = await rerun.complete("generator", user_messages("something new"), meta=meta)

    assert again == scores and reply.cached
    assert not plain.cached and plain_again.cached
    assert fake_llm.calls.total == 2  # only "something new", once
    events = rerun.drain_events()
    assert [event.status for event in events] == ["cached", "ok", "cached"]
    assert events[0].tokens_in == 0 and events[0].cost_usd == 0
    store.insert(events)
    assert store.count(Event, "status = 'cached'") == 2


async def test_a_reply_stored_mid_run_leaves_memory_and_is_still_served(
    fake_llm: FakeLlm, tmp_path: Path
) -> None:
    store = Store(tmp_path / "toucan.duckdb")
    cache = LlmCache.load(store, run_id="run_1")
    router = LlmRouter(models_config_for(fake_llm), cache=cache)
    first = await router.complete("generator", user_messages("once"), meta=META)
    entries = cache.drain_new()
    store.insert(entries)
    cache.stored(entries)  # what the run's reply writer does once the entries are written
    assert cache._replies == {}  # only the key's 64-bit prefix stays in memory

    again = await router.complete("generator", user_messages("once"), meta=META)
    assert again.cached and again.text == first.text
    assert fake_llm.calls.total == 1 and cache.fetches == 1


async def test_prefixes_merged_into_the_sorted_array_still_serve_their_replies(
    fake_llm: FakeLlm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "MERGE_WRITTEN_AT", 2)
    store = Store(tmp_path / "toucan.duckdb")
    cache = LlmCache.load(store, run_id="run_1")
    router = LlmRouter(models_config_for(fake_llm), cache=cache)
    asked = ["one", "two", "three"]
    for text in asked:
        await router.complete("generator", user_messages(text), meta=META)
        entries = cache.drain_new()
        store.insert(entries)
        cache.stored(entries)

    assert len(cache._written) == 1 and len(cache._stored) == 2  # two merged, one waiting
    assert list(cache._stored) == sorted(cache._stored)
    again = [await router.complete("generator", user_messages(text), meta=META) for text in asked]
    assert all(reply.cached for reply in again) and fake_llm.calls.total == 3


async def test_the_fake_server_counts_by_rule_and_serves_its_counts_over_http(
    fake_llm: FakeLlm,
) -> None:
    import httpx

    fake_llm.script([Rule(on_calls={1}, text="second"), Rule(model="gen-b", text="b")])
    router = LlmRouter(models_config_for(fake_llm))

    replies = [
        await router.complete(name, user_messages("hi")) for name in ("gen-a", "gen-a", "gen-b")
    ]

    assert [reply.text for reply in replies] == ["ok", "second", "b"]
    async with httpx.AsyncClient() as client:
        counts = (await client.get(fake_llm.base_url.removesuffix("/v1") + "/_fake/calls")).json()
    assert counts["total"] == 3 and counts["by_rule"] == {"0": 1, "1": 1}
    assert counts["by_model"] == {"gen-a": 2, "gen-b": 1}


def test_a_pickled_cache_answers_known_replies_and_hands_back_only_its_own_entries() -> None:
    cache = LlmCache(run_id="run_1")
    known = make_cache_key(
        "Judge", "openai/judge", [{"role": "user", "content": "a"}], None, None, {}
    )
    cache.put(known, LlmReply(text="known", deployment="Judge", model="openai/judge"))
    copy = pickle.loads(pickle.dumps(cache))  # what a batch on a Dask worker gets

    assert copy.get(known).text == "known" and copy.drain_new() == []
    fresh = make_cache_key(
        "Judge", "openai/judge", [{"role": "user", "content": "b"}], None, None, {}
    )
    copy.put(fresh, LlmReply(text="fresh", deployment="Judge", model="openai/judge"))
    assert [e.cache_key for e in copy.drain_new()] == [fresh.key]
    assert cache.get(fresh) is None and [e.cache_key for e in cache.drain_new()] == [known.key]


def test_forks_share_the_stored_prefixes_and_each_drains_only_its_own_entries(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "toucan.duckdb")
    stored = make_cache_key("T", "openai/t", [{"role": "user", "content": "a"}], None, None, {})
    reply = LlmReply(text="stored", deployment="T", model="openai/t")
    writer = LlmCache(run_id="run_1")
    writer.put(stored, reply)
    store.insert(writer.drain_new())
    run_cache = LlmCache.load(store, run_id="run_2")  # what an agent stage hands its batches
    one, other = run_cache.fork(), run_cache.fork()  # two batches in this process

    assert one._stored is run_cache._stored  # shared, not copied per batch
    assert one.get(stored).text == "stored" and one.fetches == 1
    fresh = make_cache_key("T", "openai/t", [{"role": "user", "content": "b"}], None, None, {})
    one.put(fresh, reply.model_copy(update={"text": "fresh"}))
    assert other.get(fresh) is None and other.drain_new() == []
    assert [e.cache_key for e in one.drain_new()] == [fresh.key]
    assert run_cache.drain_new() == []


def test_a_pickled_progress_counter_counts_apart_and_the_owner_catches_up() -> None:
    counter = ProgressCounter("filter_tasks", total=4, done=1)
    copy = pickle.loads(pickle.dumps(counter))
    copy.advance("t1", "ok")
    copy.advance("t2", "error")
    assert (copy.done, copy.failed, counter.done) == (3, 1, 1)
    counter.catch_up(3, 1)
    counter.catch_up(2, 0)  # a count already past is left as it is
    assert (counter.done, counter.failed) == (3, 1)
