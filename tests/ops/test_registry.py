"""The registry (flows/registry.py) is the one stage list: the pipeline's typed parameters,
the deployments, the CLI's stage commands and the demo all come from it."""

from __future__ import annotations

import asyncio
import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli import app
from cli.demo import demo_passes
from cli.running import STAGE_COMMANDS
from deployments.definitions import deployment_specs
from flows.parameters import documented
from flows.pipeline import pipeline
from flows.registry import STAGE_NAMES, STAGES, StageName, check_settings, stage
from flows.runner import run_stage_async
from toucan.config import load_settings
from toucan.errors import ConfigError
from toucan.records import Run
from toucan.store import Store


def test_every_stage_is_named_once_in_running_order() -> None:
    assert STAGE_NAMES[:3] == ("onboard", "synthesize", "filter_tasks")
    assert STAGE_NAMES[-2:] == ("export", "report")
    assert len(set(STAGE_NAMES)) == len(STAGE_NAMES) == 10
    assert typing.get_args(StageName) == STAGE_NAMES
    for entry in STAGES:
        assert entry.job.__module__ == f"flows.{entry.name}" and entry.job.name == entry.name
        assert entry.flow.fn.__module__ == "flows.registry" and entry.description


def test_a_stage_is_found_by_its_name_or_command_and_an_unknown_one_is_refused() -> None:
    assert stage("filter-tasks") is stage("filter_tasks") is STAGES[2]
    with pytest.raises(ConfigError) as refused:
        stage("filter-task")
    assert refused.value.reason == "unknown_stage"


def test_the_pipeline_form_offers_exactly_the_registered_stages() -> None:
    list_of_stages = typing.get_args(typing.get_type_hints(pipeline.fn)["stages"])[0]
    (literal,) = typing.get_args(list_of_stages)
    assert typing.get_args(literal) == STAGE_NAMES


def test_the_deployments_are_the_pipeline_and_one_per_registered_stage() -> None:
    specs = deployment_specs()
    assert [s.flow_name for s in specs] == ["pipeline", *STAGE_NAMES]
    assert [s.name for s in specs[1:]] == [entry.command for entry in STAGES]


def test_the_cli_runs_only_registered_stages_and_the_demo_runs_them_all() -> None:
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert set(STAGE_COMMANDS) <= commands
    assert set(STAGE_COMMANDS) <= {entry.command for entry in STAGES}
    first, second = demo_passes()
    assert first == (1, STAGE_NAMES)
    assert set(second[1]) < set(STAGE_NAMES) and "filter_tasks" in second[1]


def test_a_budget_cap_on_an_unknown_stage_is_refused_before_the_stage_starts(
    tmp_path: Path,
) -> None:
    capped = load_settings(profile="local", overrides={"budget": {"per_stage": {"diversify": 2}}})
    check_settings(capped)
    typo = load_settings(profile="local", overrides={"budget": {"per_stage": {"synthesise": 1}}})
    with pytest.raises(ConfigError) as refused:
        check_settings(typo)
    assert refused.value.reason == "bad_config"
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(ConfigError):
        asyncio.run(run_stage_async("filter_tasks", typo, store))
    assert store.select(Run) == []  # refused before the run row
    config = tmp_path / "toucan.yaml"
    config.write_text("budget:\n  per_stage:\n    synthesise: 1.0\n", encoding="utf-8")
    shown = CliRunner().invoke(app, ["config", "--config", str(config), "--profile", "local"])
    assert shown.exit_code != 0 and "synthesise" in shown.output


def test_every_parameter_of_every_flow_has_help_text_in_the_deployment_form() -> None:
    flows = [pipeline, *(entry.flow for entry in STAGES)]
    for flow_ in flows:
        fields = flow_.parameters.model_dump()["properties"]
        assert fields, flow_.name
        undescribed = [name for name, field in fields.items() if not field.get("description")]
        assert undescribed == [], flow_.name
    export_fields = STAGES[-2].flow.parameters.model_dump()["properties"]
    assert "store" in export_fields and "store_path" not in export_fields  # one name everywhere


def test_a_flow_parameter_without_a_description_fails_at_import() -> None:
    def carelessly(store: str | None = None, colour: str = "red") -> None:
        """A flow someone added without describing `colour`."""

    with pytest.raises(ValueError, match="colour"):
        documented("carelessly")(carelessly)
