"""The extensions end to end against the fake model server and real MCP servers: trajectories,
irrelevance, diversify, multi-turn, then an export with all four subsets and no secrets."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow.parquet as pq

from flows.runner import run_stage_async
from mcp_env.specs import StdioSpec
from tasks.scrub import find_secrets
from tests.export.seeding import export_to
from tests.extensions.fleet_server import SEEDED_SECRETS
from tests.fake_llm import SNAPSHOT_SUFFIX, FakeLlm, Rule
from tests.synthesize.seed import judge_with
from tests.trajectories.conftest import quiet_litellm_typeddict_warning
from tests.trajectories.helpers import fake_settings, kept_task, seed_store, server_row
from toucan.config import FilterTrajectoriesConfig
from toucan.records import Task, Trajectory, TrajectoryRating
from toucan.store import Store

__all__ = ["quiet_litellm_typeddict_warning"]
FLEET_SERVER = Path(__file__).with_name("fleet_server.py")


def fleet_server(mode: str, domain: str):
    spec = StdioSpec(name=mode, command=sys.executable, args=[str(FLEET_SERVER), "--mode", mode])
    return server_row(spec).model_copy(update={"domain": domain, "tool_count": 2})


def agent(request: dict[str, Any]) -> Rule:
    names = {t["function"]["name"] for t in request["tools"]}
    messages = request["messages"]
    if "lookup" not in names:
        return Rule(text="None of my tools can look that up, so I cannot do this for you.")
    if messages[-1]["role"] == "tool":
        return Rule(text=f"Here is what I found: {messages[-1]['content'][:120]}")
    return Rule(tool_calls=[("lookup", {"key": f"db{len(messages)}"}), ("add", {"a": 2, "b": 3})])


def fake_model(request: dict[str, Any]) -> Any:
    if request.get("model") == "Judge":
        return judge_with(5)(request)
    if request.get("tools"):
        return agent(request)
    prompt = str(request["messages"][-1].get("content"))
    if "Write the user's next message" in prompt:
        return {"question": "Thanks. Now look up the staging entry as well, please."}
    if "sequential user messages" in prompt:
        return {
            "sub_questions": [
                "Look up the production database entry.",
                "Great, now add 2 and 3 for the replica count.",
            ]
        }
    if "variations" in prompt:
        return {
            "variations": [
                {
                    "persona": "p",
                    "context": "c",
                    "constraints": "k",
                    "question": "As an auditor, fetch the db entry and sum 2 and 3.",
                }
            ]
        }
    raise AssertionError(f"unexpected request: {prompt[:200]}")


def test_every_subset_is_exported_without_the_fleets_secrets(tmp_path):
    vault, arcade = (
        fleet_server("vault", "Security & Authentication"),
        fleet_server("arcade", "Gaming"),
    )
    task, rating = kept_task(
        "Fetch the production db entry and add 2 and 3 for the replicas.",
        [vault],
        [(vault, "lookup"), (vault, "add")],
    )
    store = Store(tmp_path / "toucan.duckdb")
    seed_store(store, [vault, arcade], [(task, rating)])
    with FakeLlm(default=fake_model) as fake:
        # the export must scrub whatever the filter lets through, so the leak rule is off here
        drop = [f for f in FilterTrajectoriesConfig().drop_flags if f != "local_path_or_secret"]
        settings = fake_settings(
            fake.base_url,
            store.path,
            extensions={"diversify_variants": 1},
            filter_trajectories={"drop_flags": drop},
        )
        asyncio.run(run_stage_async("irrelevance", settings, store))
        asyncio.run(run_stage_async("diversify", settings, store))
        asyncio.run(run_stage_async("filter_tasks", settings, store))
        asyncio.run(run_stage_async("trajectories", settings, store))
        asyncio.run(run_stage_async("filter_trajectories", settings, store))
        multi = asyncio.run(run_stage_async("multi_turn", settings, store, follow_ups=1))
        asyncio.run(run_stage_async("filter_trajectories", settings, store))
    assert multi.by_method == {"split": 1, "extend": 1}
    # who wrote what: the diversifying generator, and the teacher over every trajectory (the
    # extended conversation keeps its base's provenance); the fake answers as a snapshot
    diversified = store.select(Task, "kind = 'diversified' AND status = 'ok'")
    assert {t.served_by for t in diversified} == {"Gen" + SNAPSHOT_SUFFIX}
    trajectories = store.select(Trajectory, "status = 'ok'")
    assert {(t.deployment, t.served_by) for t in trajectories} == {
        ("Teacher-A", "Teacher-A" + SNAPSHOT_SUFFIX)
    }
    kinds = {r.kind: r for r in store.select(Trajectory, "status = 'ok'")}
    assert kinds["irrelevant"].tool_calls == 0
    kept = {r.trajectory_id for r in store.select(TrajectoryRating, "keep")}
    assert {kind for kind, row in kinds.items() if row.trajectory_id in kept} == {
        "original",
        "irrelevant",
        "diversified",
        "multi_turn",
    }

    out = tmp_path / "dataset"
    summary = export_to(store, settings, out, ["parquet", "sharegpt"])
    rows = [r for p in (out / "data").glob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert {r["subset_name"] for r in rows} == {
        "single-turn-original",
        "irrelevant",
        "single-turn-diversify",
        "multi-turn",
    }
    assert summary.excluded == {}
    for row in rows:
        for value in row.values():
            assert not [s for s in SEEDED_SECRETS if s in value]
            assert find_secrets(value) == []
        schemas = {
            t["function"]["name"]: t["function"]["parameters"]
            for t in json.loads(row["available_tools"])
        }
        for message in json.loads(row["messages"]):
            for call in message.get("tool_calls") or []:
                jsonschema.validate(
                    json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]]
                )
    for path in out.rglob("*.jsonl"):
        assert not [s for s in SEEDED_SECRETS if s in path.read_text()]
    quality = json.loads(rows[0]["response_quality_assessment"])
    assert {"completeness", "desired_tools_used_percentage", "order_correctness"} <= set(quality)
    assert summary.scrubbed["openai_key"] >= 1 and summary.scrubbed["private_key"] >= 1
