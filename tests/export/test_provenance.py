"""True provenance: rows, events, export rows and the dataset card name the model that actually
served each call (the provider's response `model`), not the configured deployment name.

The fake model server answers like real providers: a call to `Gen` comes back as served by
`Gen-2024-07-18` (tests/fake_llm.py). The MCP server is real (stdio)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from flows.runner import run_stage_async
from tasks.export_provenance import UNKNOWN_MODEL
from tests.export.seeding import export_to, seed_pipeline
from tests.fake_llm import SNAPSHOT_SUFFIX, FakeLlm, Rule
from tests.synthesize.seed import competent_generator, judge_with
from tests.trajectories.conftest import quiet_litellm_typeddict_warning
from tests.trajectories.helpers import fake_settings, server_row, tiny_spec
from toucan.config import load_settings
from toucan.ids import make_id, schema_hash
from toucan.records import Event, Task, TaskRating, Tool, Trajectory, TrajectoryRating
from toucan.store import Store

__all__ = ["quiet_litellm_typeddict_warning"]
ECHO_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
}
EMBEDDED = "SmolLM2-135M-Instruct"
PROVENANCE_COLUMNS = {
    "tasks": ("served_by", "served_by_embedded"),
    "task_ratings": ("served_by", "served_by_embedded"),
    "trajectories": ("deployment", "served_by", "served_by_embedded"),
    "trajectory_ratings": ("served_by", "served_by_embedded"),
    "events": ("served_by",),
}


def served(deployment: str) -> str:
    return deployment + SNAPSHOT_SUFFIX


def fake_model(request: dict[str, Any]) -> Any:
    """Generator, judge and an agent that echoes, then answers from the tool's result."""
    if request["model"] == "Judge":
        return judge_with(5)(request)
    if request.get("tools"):
        if request["messages"][-1]["role"] == "tool":
            return Rule(text=f"The server echoed: {request['messages'][-1]['content']}")
        return Rule(tool_calls=[("echo", {"text": "toucan"})])
    return competent_generator(request)


def seed_echo_server(store: Store, tmp_path: Path) -> None:
    """A real stdio server whose one catalogued tool, `echo`, is what every task targets."""
    server = server_row(tiny_spec(tmp_path / "calls.log")).model_copy(
        update={"domain": "Daily Productivity", "tool_count": 1}
    )
    digest = schema_hash(ECHO_SCHEMA)
    echo = Tool(
        tool_id=make_id("tool", server.server_id, "echo", digest),
        server_id=server.server_id,
        name="echo",
        description="Echo the text back.",
        input_schema=ECHO_SCHEMA,
        schema_hash=digest,
    )
    store.insert([server, echo])


def run_pipeline(store: Store, tmp_path: Path) -> Any:
    with FakeLlm(default=fake_model) as fake:
        settings = fake_settings(fake.base_url, store.path)
        asyncio.run(
            run_stage_async("synthesize", settings, store, strategies=["single_server"], limit=1)
        )
        asyncio.run(run_stage_async("filter_tasks", settings, store))
        asyncio.run(run_stage_async("trajectories", settings, store))
        asyncio.run(run_stage_async("filter_trajectories", settings, store))
    out = tmp_path / "dataset"
    return export_to(store, settings, out, ["parquet"]), out


def test_rows_events_export_and_card_name_the_model_that_served_each_call(tmp_path: Path) -> None:
    store = Store(tmp_path / "toucan.duckdb")
    seed_echo_server(store, tmp_path)

    summary, out = run_pipeline(store, tmp_path)

    [task] = store.select(Task)
    [task_rating] = store.select(TaskRating)
    [trajectory] = store.select(Trajectory)
    [rating] = store.select(TrajectoryRating)
    assert (task.served_by, task.served_by_embedded) == (served("Gen"), False)
    assert (task_rating.judge, task_rating.served_by) == ("Judge", served("Judge"))
    assert trajectory.teacher == trajectory.deployment == "Teacher-A"
    assert (trajectory.served_by, trajectory.served_by_embedded) == (served("Teacher-A"), False)
    assert (rating.served_by, rating.keep) == (served("Judge"), True)
    calls = store.select(Event, "kind = 'llm_call'")
    assert {(e.model, e.served_by) for e in calls} == {
        (name, served(name)) for name in ("Gen", "Judge", "Teacher-A")
    }

    [row] = pq.read_table(out / "data").to_pylist()
    metadata = json.loads(row["metadata"])
    assert metadata["model"] == served("Teacher-A")
    assert metadata["requested_model"] == "openai/Teacher-A"
    assert metadata["served_by_embedded_model"] is False
    assert {role: who["served_by"] for role, who in metadata["provenance"].items()} == {
        "generator": served("Gen"),
        "teacher": served("Teacher-A"),
        "task_judge": served("Judge"),
        "trajectory_judge": served("Judge"),
    }
    assert summary.served.served_by["teacher"] == {served("Teacher-A"): 1}
    assert summary.served.embedded_rows == 0
    card = (out / "README.md").read_text()
    assert f"| teacher | {served('Teacher-A')} | 1 |" in card
    assert f"| generator | {served('Gen')} | 1 |" in card
    assert "embedded" not in card


def test_a_local_profile_export_says_in_card_and_rows_that_the_embedded_model_made_it(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "toucan.duckdb")
    seed_pipeline(store)
    made_locally = {"served_by": EMBEDDED, "served_by_embedded": True}
    for record in (Task, TaskRating, Trajectory, TrajectoryRating):
        store.upsert([row.model_copy(update=made_locally) for row in store.select(record)])
    out = tmp_path / "dataset"

    summary = export_to(store, load_settings(profile="local"), out, ["parquet"])

    rows = pq.read_table(out / "data").to_pylist()
    assert summary.rows == len(rows) == 4
    for row in rows:
        metadata = json.loads(row["metadata"])
        assert metadata["model"] == EMBEDDED and metadata["served_by_embedded_model"] is True
        assert {who["served_by"] for who in metadata["provenance"].values()} == {EMBEDDED}
    assert summary.served.embedded_models == [EMBEDDED]
    assert summary.served.embedded_rows == 4
    card = (out / "README.md").read_text()
    assert f"Produced by the embedded local model `{EMBEDDED}`" in card
    assert f"| teacher | {EMBEDDED} | 4 |" in card


def test_an_old_store_without_provenance_exports_it_as_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "toucan.duckdb"
    old = Store(path)
    seed_pipeline(old)
    for table, columns in PROVENANCE_COLUMNS.items():
        for column in columns:
            old.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # the schema before them
    out = tmp_path / "dataset"

    summary = export_to(Store(path), load_settings(profile="local"), out, ["parquet"])

    assert summary.rows == 4 and summary.excluded == {"invalid_tool_arguments": 1}
    metadata = json.loads(pq.read_table(out / "data").to_pylist()[0]["metadata"])
    assert metadata["model"] is None and metadata["served_by_embedded_model"] is None
    assert summary.served.served_by["teacher"] == {UNKNOWN_MODEL: 4}
    assert "Produced by the embedded" not in (out / "README.md").read_text()
