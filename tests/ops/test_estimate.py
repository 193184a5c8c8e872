"""`toucan estimate` against real runs: a store where synthesize, filter-tasks and trajectories
ran once on the fake model server (real MCP servers, real DuckDB), an estimate of a second run
of the same size, then that run, compared stage by stage with the usage the store recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from flows.estimate import estimate_run
from flows.pipeline import pipeline
from flows.runner import run_stage_async
from tests.fake_llm import FakeLlm, Rule
from tests.synthesize.seed import competent_generator, judge_with, seed_servers
from tests.trajectories.conftest import quiet_litellm_typeddict_warning
from tests.trajectories.helpers import deployment, fleet_dir
from toucan.config import Settings, load_settings
from toucan.estimate import Estimate
from toucan.records import Event, Run
from toucan.store import Store

__all__ = ["quiet_litellm_typeddict_warning"]
TINY = Path(__file__).resolve().parents[1] / "servers" / "tiny_server.py"
STAGES = ["synthesize", "filter_tasks", "trajectories"]
PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6}


def agent(request: dict[str, Any]) -> Rule:
    """Two turns of tool calls (echo, then add), then an answer that quotes the last result."""
    turn = sum(1 for m in request["messages"] if m.get("role") == "assistant")
    names = {t["function"]["name"] for t in request["tools"]}
    echo = next(n for n in names if n.endswith("echo"))
    add = next(n for n in names if n.endswith("add"))
    question = next(m["content"] for m in request["messages"] if m["role"] == "user")
    if turn == 0:
        return Rule(tool_calls=[(echo, {"text": question[:80]})])
    if turn == 1:
        return Rule(tool_calls=[(add, {"a": len(question), "b": turn})])
    return Rule(text=f"Done: the sum is {request['messages'][-1]['content']}.")


def fake_model(request: dict[str, Any]) -> Any:
    if request.get("model") == "Judge":
        return judge_with(5)(request)
    if request.get("tools"):
        return agent(request)
    return competent_generator(request)


def config_document(fake: FakeLlm, store: Path) -> dict[str, Any]:
    """One generator, one teacher, one judge on the fake server; the judge has no price."""
    models = {
        "generators": [deployment("Gen", fake.base_url, **PRICE)],
        "teachers": [deployment("Teacher-A", fake.base_url, **PRICE)],
        "judge": [deployment("Judge", fake.base_url, params={"temperature": 0})],
        "fallbacks": {},
    }
    return {
        "profile": "cloud",
        "models": models,
        "store": str(store),
        "mcp": {"fleet_dir": str(fleet_dir())},
        "synthesize": {"strategies": ["single_server"], "per_server": 4},
    }


def settings_for(fake: FakeLlm, store: Path) -> Settings:
    return load_settings(None, profile="cloud", overrides=config_document(fake, store))


def catalog(tmp_path: Path) -> str:
    servers = [
        {"name": n, "command": sys.executable, "args": [str(TINY)]} for n in ("tiny-a", "tiny-b")
    ]
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"servers": servers}))
    return str(path)


def run(stage: str, settings: Settings, store: Store, **params: Any) -> Any:
    return asyncio.run(run_stage_async(stage, settings, store, **params))


def recorded_usage(store: Store, stage: str, after: str) -> tuple[int, int]:
    """Prompt and completion tokens the provider reported for a stage's calls since `after`."""
    tokens_in, tokens_out = store.query(
        "SELECT coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0) FROM events "
        "WHERE stage = ? AND kind = 'llm_call' AND started_at > ?",
        [stage, after],
    )[0]
    return int(tokens_in), int(tokens_out)


def calls_in(store: Store, stage: str) -> int:
    """Model calls the stage's second run sent (its answered `llm_call` events since the reset)."""
    return int(
        store.query(
            "SELECT count(*) FROM events WHERE stage = ? AND kind = 'llm_call' "
            "AND status = 'ok' AND run_id IN (SELECT run_id FROM runs WHERE stage = ? "
            "ORDER BY started_at DESC LIMIT 1)",
            [stage, stage],
        )[0][0]
    )


def now(store: Store) -> str:
    return str(store.query("SELECT max(ended_at) FROM events")[0][0])


def expected_tokens(estimate: Estimate, stage: str) -> tuple[float, float]:
    line = next(s for s in estimate.stages if s.stage == stage)
    tokens_in, tokens_out = line.sum_of("tokens_in"), line.sum_of("tokens_out")
    assert tokens_in is not None and tokens_out is not None, line
    return tokens_in.expected, tokens_out.expected


def assert_within(predicted: float, actual: int, stage: str, what: str) -> None:
    assert actual > 0, f"{stage}: no {what} recorded"
    assert abs(predicted - actual) <= 0.2 * actual, f"{stage} {what}: {predicted:.0f} vs {actual}"


@pytest.mark.timeout(900)
def test_the_estimate_of_a_second_run_is_within_20_percent_of_what_it_then_recorded(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "toucan.duckdb")
    with FakeLlm(default=fake_model) as fake:
        settings = settings_for(fake, store.path)
        run("onboard", settings, store, catalogs=[catalog(tmp_path)])
        for stage in STAGES:
            run(stage, settings, store)
        fake.reset()

        second = {"synthesize": {"seed": 1}}
        estimate = estimate_run(store, settings, STAGES, second)
        assert fake.calls.total == 0  # an estimate asks no model
        by_stage = {s.stage: s for s in estimate.stages}
        assert by_stage["synthesize"].planned == 8 and by_stage["synthesize"].already_done == 0
        assert by_stage["filter_tasks"].planned == 0 and by_stage["filter_tasks"].projected == 8
        assert by_stage["trajectories"].projected == 8
        # the judge has no price: its stage's dollars are unknown, never $0
        assert estimate.unpriced == ["Judge"]
        assert by_stage["filter_tasks"].models[0].usd is None and estimate.usd() is None
        assert by_stage["synthesize"].sum_of("usd") is not None

        marks = {}
        for stage in STAGES:
            marks[stage] = now(store)
            # the same estimate again right before each stage: its planned items are rendered
            ahead = estimate_run(store, settings, [stage], second)
            run(stage, settings, store, **second.get(stage, {}))
            actual = recorded_usage(store, stage, marks[stage])
            for source in (estimate, ahead):
                predicted = expected_tokens(source, stage)
                assert_within(predicted[0], actual[0], stage, "prompt tokens")
                assert_within(predicted[1], actual[1], stage, "completion tokens")
            print(stage, "estimated", expected_tokens(estimate, stage), "recorded", actual)

        # the stages after them, never run here: planned from the store, priced without history
        later = estimate_run(
            store, settings, ["filter_trajectories", "diversify", "multi_turn"], {}
        )
        assert fake.calls.total == sum(calls_in(store, s) for s in STAGES)  # none by estimates
    rating, variants, multi = later.stages
    assert rating.planned == 16 and variants.planned == 16 * 2  # kept tasks x modes
    assert rating.sum_of("tokens_in") is not None and variants.sum_of("usd") is not None
    assert any("max_tokens" in n for n in variants.models[0].notes)
    # multi-turn prompts are not rendered: with no history its tokens are unknown
    assert multi.planned > 0 and multi.sum_of("tokens_in") is None


@contextlib.contextmanager
def seeded(tmp_path: Path) -> Iterator[tuple[Store, FakeLlm, Path]]:
    """A store of servers (with a launch spec) and tools written straight in (a plan needs no
    process), the fake model server, and a config file pointing at both."""
    store = Store(tmp_path / "seeded.duckdb")
    servers = seed_servers(store)
    spec = {"transport": "stdio", "command": sys.executable, "args": [str(TINY)]}
    store.upsert([s.model_copy(update={"spec": {**spec, "name": s.name}}) for s in servers])
    with FakeLlm(default=fake_model) as fake:
        config = tmp_path / "toucan.yaml"
        config.write_text(yaml.safe_dump(config_document(fake, store.path)))
        yield store, fake, config


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("prefect_harness")
def test_a_dry_run_of_the_pipeline_publishes_the_estimate_and_asks_no_model(
    tmp_path: Path,
) -> None:
    with seeded(tmp_path) as (store, fake, config):
        report = asyncio.run(
            pipeline(stages=STAGES, store=str(store.path), config=str(config), dry_run=True)
        )
        assert fake.calls.total == 0
    assert [o.outcome for o in report.outcomes] == ["estimated"] * 3
    assert report.estimate is not None
    synthesize, judge, teacher = report.estimate.stages
    assert synthesize.planned == 5 * 4 and synthesize.sum_of("usd") is not None
    # a fresh store: no history, so completions are priced at max_tokens and said to be
    assert any("max_tokens" in note for note in synthesize.models[0].notes)
    assert judge.projected == teacher.projected == synthesize.planned  # no yield known: all pass
    # their requests are rendered from the synthesis plan (the questions not written yet)
    assert judge.sum_of("tokens_in") is not None and teacher.sum_of("usd") is not None
    assert any("turn budget" in note for note in teacher.models[0].notes)
    assert store.count(Run) == 0 and store.count(Event) == 0  # nothing written


def test_the_estimate_command_prints_the_table_or_json_and_refuses_an_unknown_stage(
    tmp_path: Path,
) -> None:
    with seeded(tmp_path) as (store, fake, config):
        common = ["--store", str(store.path), "--config", str(config)]
        as_json = CliRunner().invoke(
            app, ["estimate", "--stage", "filter-tasks", "--stage", "synthesize", "--json", *common]
        )
        table = CliRunner().invoke(
            app, ["estimate", "--stage", "synthesize", "--stage", "filter-tasks", *common]
        )
        unknown = CliRunner().invoke(app, ["estimate", "--stage", "synthesise", *common])
        assert fake.calls.total == 0
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.stdout)
    assert [s["stage"] for s in payload["stages"]] == ["synthesize", "filter_tasks"]  # run order
    assert payload["unpriced"] == ["Judge"]
    assert table.exit_code == 0
    assert "unknown" in table.output and "Judge" in table.output
    assert unknown.exit_code == 2 and "unknown stage" in unknown.output


def test_the_local_profile_costs_nothing_and_a_missing_store_is_said_and_not_created(
    tmp_path: Path,
) -> None:
    with seeded(tmp_path) as (store, fake, _):
        local = load_settings(None, profile="local", overrides={"store": str(store.path)})
        estimate = estimate_run(store, local, ["synthesize", "filter_tasks"], {})
        missing = Store(tmp_path / "none.duckdb")
        nothing = estimate_run(missing, local, ["onboard", "synthesize"], {})
        assert fake.calls.total == 0
    usd = estimate.usd()
    assert estimate.unpriced == [] and usd is not None and usd.high == 0  # known, and free
    assert estimate.stages[0].planned > 0
    assert "approximation" in estimate.stages[0].models[0].tokenizer
    assert not missing.path.exists()
    assert not nothing.stages[0].calls_models and "no store yet" in nothing.stages[1].notes[0]
