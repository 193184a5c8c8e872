"""Stage 3 end to end against the fake model server over real HTTP, on a real DuckDB file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from flows.runner import run_stage_async
from tasks.filter_tasks import DIMENSIONS
from tests.fake_llm import FakeLlm, Rule
from tests.synthesize.seed import (
    JUDGE,
    competent_model,
    fake_settings,
    judge_with,
    write_config,
)
from toucan.errors import ConfigError
from toucan.prompts import template_hash
from toucan.records import Task, TaskRating
from toucan.store import Store


def synthesize(config: Path, store: Store, limit: int) -> None:
    settings = fake_settings(config)
    asyncio.run(run_stage_async("synthesize", settings, store, limit=limit, seed=0))


def rate(config: Path, store: Store, limit: int | None = None, **overrides):
    settings = fake_settings(config, **overrides)
    return asyncio.run(run_stage_async("filter_tasks", settings, store, limit=limit))


def test_every_score_is_stored_and_thresholds_decide_what_is_kept(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    synthesize(config_path, store, 6)
    low = dict.fromkeys(DIMENSIONS, 5) | {"scenario_realism": 2}
    tasks = store.select(Task, "status = 'ok' ORDER BY task_id")
    fake_llm.script([Rule(model=JUDGE, contains=tasks[0].question, respond=judge_with(low))])
    summary = rate(config_path, store)
    assert (summary.rated, summary.kept, summary.rejected, summary.errors) == (6, 5, 1, 0)
    ratings = {r.task_id: r for r in store.select(TaskRating)}
    assert set(ratings) == {t.task_id for t in tasks}
    for rating in ratings.values():
        assert set(rating.scores) == set(DIMENSIONS)
        assert all(s.reasoning for s in rating.scores.values())
        assert rating.judge == JUDGE
        assert rating.prompt_hash == template_hash("filter_tasks/judge")
        assert rating.usage.prompt_tokens > 0 and not rating.cached
    rejected = ratings[tasks[0].task_id]
    assert (rejected.keep, rejected.reason, rejected.overall) == (
        False,
        "low_scenario_realism",
        round(27 / 6, 4),
    )
    by_strategy: dict[str, dict[str, int]] = {}
    by_generator: dict[str, dict[str, int]] = {}
    for task in tasks:
        outcome = "kept" if ratings[task.task_id].keep else "rejected"
        for table, label in ((by_strategy, task.strategy), (by_generator, task.generator)):
            table.setdefault(label, {}).setdefault(outcome, 0)
            table[label][outcome] += 1
    assert (summary.by_strategy, summary.by_generator) == (by_strategy, by_generator)
    # the summary's usage is counted as batches are written, and agrees with the store
    summed = store.query(
        "SELECT sum(tokens_in), sum(tokens_out), sum(cost_usd) FROM events "
        "WHERE run_id = ? AND kind = 'llm_call'",
        [summary.run_id],
    )[0]
    assert (summary.tokens_in, summary.tokens_out) == summed[:2]
    assert summary.tokens_in == sum(r.usage.prompt_tokens for r in ratings.values()) > 0
    assert summary.tokens_out == sum(r.usage.completion_tokens for r in ratings.values()) > 0
    assert summary.cost_usd == summary.spent_usd == round(summed[2], 6)


def test_raising_a_threshold_in_config_rejects_more(
    tmp_path: Path, store: Store, fake_llm: FakeLlm
) -> None:
    config = write_config(
        tmp_path / "strict.yaml", fake_llm.base_url, filter_tasks={"thresholds": {"stability": 5}}
    )
    synthesize(config, store, 3)
    fake_llm.script([Rule(model=JUDGE, respond=judge_with(dict.fromkeys(DIMENSIONS, 4)))])
    summary = rate(config, store)
    assert (summary.kept, summary.rejected, summary.by_reason) == (0, 3, {"low_stability": 3})


def test_a_typo_in_the_thresholds_fails_the_run(
    tmp_path: Path, store: Store, fake_llm: FakeLlm
) -> None:
    config = write_config(
        tmp_path / "typo.yaml", fake_llm.base_url, filter_tasks={"thresholds": {"stabilty": 5}}
    )
    with pytest.raises(ConfigError):
        rate(config, store)


def test_bad_judge_replies_become_error_rows_and_the_rest_are_rated(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    synthesize(config_path, store, 8)
    tasks = store.select(Task, "status = 'ok' ORDER BY task_id")
    out_of_range = dict.fromkeys(DIMENSIONS, 4) | {"verifiable": 9}
    replies = {  # matched anywhere in the conversation, so the repair attempt fails too
        tasks[0].question: judge_with(out_of_range),
        tasks[1].question: lambda _: Rule(text="This task looks fine to me."),
        tasks[2].question: lambda _: {"question_quality": 3},
        tasks[3].question: lambda _: Rule(status=400),
    }

    def judge(request: dict) -> object:
        conversation = json.dumps(request["messages"])
        for question, reply in replies.items():
            if json.dumps(question)[1:-1] in conversation:
                return reply(request)
        return competent_model(request)

    fake_llm.default = judge
    summary = rate(config_path, store)
    assert (summary.rated, summary.kept, summary.errors) == (8, 4, 4)
    ratings = {r.task_id: r for r in store.select(TaskRating)}
    first, prose, missing, rejected = (ratings[t.task_id] for t in tasks[:4])
    assert (first.status, first.reason) == ("error", "score_out_of_range")
    assert '"score": 9' in (first.raw_reply or "")
    assert (prose.reason, prose.raw_reply) == ("unparseable_reply", "This task looks fine to me.")
    assert missing.reason == "unparseable_reply"
    assert rejected.reason == "model_request_rejected"


def test_a_second_run_rates_nothing_and_makes_no_model_calls(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    synthesize(config_path, store, 4)
    first = rate(config_path, store, limit=3)
    calls = fake_llm.calls.total
    assert first.rated == 3
    second = rate(config_path, store)
    assert (second.rated, second.already_rated) == (1, 3)
    third = rate(config_path, store)
    assert (third.rated, third.already_rated) == (0, 4)
    assert fake_llm.calls.total == calls + 1
    assert store.count(TaskRating) == 4
