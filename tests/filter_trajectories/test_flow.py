"""The filter-trajectories flow through the CLI on a real DuckDB file and the fake judge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cli import app
from tests.fake_llm import FakeLlm, Rule
from tests.filter_trajectories.samples import make_task, make_trajectory
from tests.trajectories.helpers import cloud_command, write_config
from toucan.records import TrajectoryRating
from toucan.store import Store

CLEAN = [("calculate", {"expression": "6*7"}, "42", False)]
LEAKY = [
    (
        "calculate",
        {"expression": "6*7"},
        "42 (hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH, cache /srv/calc/x.db, /srv/calc/y.db)",
        False,
    )
]


def judge_reply(request: dict[str, Any]) -> dict[str, Any]:
    prompt = request["messages"][-1]["content"]
    completeness = 2 if "half-done" in prompt else 5
    return {
        "completeness": {"reasoning": "checked the answer", "score": completeness},
        "conciseness": {"reasoning": "no redundant calls", "score": 4},
    }


def test_filter_trajectories_stores_every_flag_and_score_and_keeps_by_the_rule(
    fake_llm: FakeLlm, tmp_path: Path, prefect_harness: None
) -> None:
    fake_llm.script([Rule(model="Judge", respond=judge_reply)])
    task, other = make_task(), make_task(question="What is 2+2?")
    irrelevant = make_task(kind="irrelevant", targets=(), question="Write me a poem")
    rows = [
        make_trajectory(task, CLEAN),  # kept
        make_trajectory(task, CLEAN, answer="half-done", teacher="Teacher-B"),  # low score
        make_trajectory(other, []),  # no tool call
        make_trajectory(irrelevant, [], answer="Roses are red."),  # kept: no tool was right
        make_trajectory(task, CLEAN, answer="", stop_reason="model_error", status="error"),
        make_trajectory(task, LEAKY, teacher="Teacher-C"),  # a token in a tool result
    ]
    store = Store(tmp_path / "t.duckdb")
    store.insert([task, other, irrelevant, *rows])
    config = write_config(tmp_path / "toucan.yaml", fake_llm.base_url)
    runner = CliRunner()
    arguments = cloud_command("filter-trajectories", store.path, config)

    result = runner.invoke(app, arguments)

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total"]["rated"] == 6 and summary["total"]["kept"] == 2
    assert summary["per_teacher"]["Teacher-A"]["keep_rate"] == 0.5
    rated_kept = {k: (v["rated"], v["kept"]) for k, v in summary["per_teacher"].items()}
    assert rated_kept == {"Teacher-A": (4, 2), "Teacher-B": (1, 0), "Teacher-C": (1, 0)}
    assert {k: (v["rated"], v["kept"]) for k, v in summary["per_server"].items()} == {
        "calculator": (6, 2)
    }
    assert summary["by_reason"] == {
        "low_completeness": 1,
        "no_tool_call": 1,
        "trajectory_failed": 1,
        "local_path_or_secret": 1,
    }
    assert summary["leaks_by_kind"] == {"huggingface_token": 1, "local_path": 1}
    ratings = {r.trajectory_id: r for r in store.select(TrajectoryRating)}
    kept = ratings[rows[0].trajectory_id]
    assert kept.keep and kept.scores["completeness"].score == 5
    assert kept.scores["completeness"].reasoning == "checked the answer"
    assert set(kept.flags) >= {"no_tool_call", "tool_execution_error", "local_path_or_secret"}
    assert kept.tool_accuracy == {"desired_tools_used": 1.0, "order_correct": 1.0}
    assert ratings[rows[2].trajectory_id].flags["no_tool_call"] is True
    assert ratings[rows[2].trajectory_id].scores  # judged all the same: every score stored
    assert ratings[rows[3].trajectory_id].keep
    assert kept.leaks == {}
    assert ratings[rows[5].trajectory_id].leaks == {"huggingface_token": 1, "local_path": 2}
    judged = [r for r in fake_llm.requests if r["model"] == "Judge"]
    assert len(judged) == 5
    assert any('arguments: {"expression": "6*7"}' in r["messages"][-1]["content"] for r in judged)

    again = runner.invoke(app, arguments)
    assert json.loads(again.stdout)["total"]["rated"] == 0
    assert len([r for r in fake_llm.requests if r["model"] == "Judge"]) == 5

    shown = runner.invoke(app, ["show", rows[0].trajectory_id[:12], "--store", str(store.path)])
    assert (
        shown.exit_code == 0
        and "calculate" in shown.output
        and "checked the answer" in (shown.output)
    )
