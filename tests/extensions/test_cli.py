"""The extension commands through the CLI and their Prefect flows, on a real store."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from cli import app
from flows.queries import pending_irrelevance
from tests.export.seeding import seed_pipeline
from tests.fake_llm import FakeLlm
from tests.trajectories.conftest import quiet_litellm_typeddict_warning
from tests.trajectories.helpers import cloud_command, deployment, seed_tiny_task
from toucan.config import load_settings
from toucan.records import Task
from toucan.store import Store

__all__ = ["quiet_litellm_typeddict_warning"]


def test_the_irrelevance_command_runs_its_flow_and_reports_json(prefect_harness, tmp_path):
    store = Store(tmp_path / "toucan.duckdb")
    seed_pipeline(store)  # two kept original tasks on the weather server, a notes server
    assert pending_irrelevance(store, load_settings(profile="local")) == 2
    args = ["irrelevance", "--store", str(store.path), "--profile", "local", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["kept_tasks"], summary["created"]) == (2, 2)
    assert pending_irrelevance(store, load_settings(profile="local")) == 0
    assert {t.server_ids[0] for t in store.select(Task, "run_id = ?", [summary["run_id"]])} == {
        "srv_notes"
    }


def test_an_unknown_multi_turn_method_is_refused(tmp_path):
    result = CliRunner().invoke(
        app, ["multi-turn", "--method", "telepathy", "--store", str(tmp_path / "s.duckdb")]
    )
    assert result.exit_code == 2
    assert "telepathy" in result.output


def write_config(path, base_url: str) -> None:
    models = {
        "generators": [deployment("Gen", base_url)],
        "teachers": [deployment("Teacher-A", base_url)],
        "judge": [deployment("Judge", base_url)],
        "route_to_local": False,
    }
    path.write_text(yaml.safe_dump({"models": models, "extensions": {"diversify_variants": 1}}))


def test_diversify_and_multi_turn_commands_run_their_prefect_flows(prefect_harness, tmp_path):
    from tests.extensions.test_diversify import seed_kept_task, variations
    from tests.extensions.test_multi_turn import fake_model

    def model(request: dict) -> object:
        prompt = str(request["messages"][-1].get("content"))
        return variations(request) if "variations" in prompt else fake_model(request)

    store, _, _ = seed_tiny_task(tmp_path)
    seed_kept_task(store)
    with FakeLlm(default=model) as fake:
        config = tmp_path / "toucan.yaml"
        write_config(config, fake.base_url)
        diversified = CliRunner().invoke(app, cloud_command("diversify", store.path, config))
        assert diversified.exit_code == 0, diversified.output
        assert json.loads(diversified.stdout)["variants_written"] == 4  # 2 tasks x 2 modes
        command = cloud_command("multi-turn", store.path, config)
        multi = CliRunner().invoke(app, [*command, "--method", "split"])
        assert multi.exit_code == 0, multi.output
    summary = json.loads(multi.stdout)
    assert summary["by_method"] == {"split": 1}  # the lyon task's servers are not in the store
    assert (summary["requested_turns"], summary["completed_turns"]) == (2, 2)
