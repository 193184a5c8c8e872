"""Shared set-up for the trajectory tests: settings pointing at the fake model server, a store
seeded with servers, kept tasks and their ratings, and scripted agent replies."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp_env.specs import StdioSpec
from tasks.trajectories import (
    BatchOptions,
    BatchResult,
    ServerEntry,
    TrajectoryBatch,
    TrajectoryItem,
    generate_batch,
)
from tests.fake_llm import Rule
from tests.mcp_env.conftest import with_writable_log
from toucan.config import Settings, load_settings
from toucan.ids import make_id
from toucan.records import Server, TargetTool, Task, TaskRating
from toucan.store import Store

TINY_SERVER = Path(__file__).resolve().parents[1] / "servers" / "tiny_server.py"
FAKE_KEY_ENV = "TOUCAN_TEST_FAKE_KEY"
os.environ.setdefault(FAKE_KEY_ENV, "sk-fake")


def deployment(
    name: str,
    base_url: str,
    *,
    api_key_env: str = FAKE_KEY_ENV,
    timeout_s: float = 30,
    **extra: Any,
) -> dict[str, Any]:
    """A deployment (as in a config file) on the fake model server at `base_url`."""
    return {
        "name": name,
        "model": f"openai/{name}",
        "api_base": base_url,
        "api_key_env": api_key_env,
        "max_retries": 1,
        "timeout_s": timeout_s,
        **extra,
    }


def cloud_command(command: str, store: Path, config: Path) -> list[str]:
    """The arguments of a `toucan <command>` run on `store` with the settings file `config`,
    in the cloud profile, printing its summary as JSON."""
    return [command, "--store", str(store), "--config", str(config), "--profile", "cloud", "--json"]


def fake_settings(
    base_url: str,
    store: Path,
    *,
    teachers: tuple[str, ...] = ("Teacher-A",),
    teacher: dict[str, Any] | None = None,
    **sections: Any,
) -> Settings:
    """Cloud-profile settings with every model group on the fake server; `teacher` holds
    extra deployment fields of every teacher (e.g. `tool_rules`)."""
    models = {
        "generators": [deployment("Gen", base_url)],
        "teachers": [deployment(name, base_url, **(teacher or {})) for name in teachers],
        "judge": [deployment("Judge", base_url, params={"temperature": 0})],
        "fallbacks": {},
        "route_to_local": False,
    }
    overrides = {"models": models, "store": str(store), **sections}
    overrides.setdefault("mcp", {})
    overrides["mcp"] = {"fleet_dir": str(fleet_dir()), **overrides["mcp"]}
    return load_settings(None, profile="cloud", overrides=overrides)


def fleet_dir() -> Path:
    return Path(__file__).resolve().parents[2] / ".fleet"


def tiny_spec(log: Path, name: str = "tiny", mode: str = "good") -> StdioSpec:
    return StdioSpec(
        name=name,
        command=sys.executable,
        args=[str(TINY_SERVER), "--mode", mode, "--log", str(log)],
        sandbox=with_writable_log(log),
    )


def ok_server(server_id: str, name: str, **fields: Any) -> Server:
    """A server row that onboarding passed (status ok): a fleet server over stdio unless
    `fields` say otherwise."""
    defaults = {"source": "fleet", "transport": "stdio", "status": "ok"}
    return Server(server_id=server_id, name=name, **{**defaults, **fields})


def server_row(spec: Any) -> Server:
    """The ok server row of a spec, the spec stored with it."""
    fields = {"source": spec.source, "transport": spec.transport}
    return ok_server(spec.server_id, spec.name, **fields, spec=spec.model_dump(mode="json"))


def kept_task(
    question: str,
    servers: list[Server],
    targets: list[tuple[Server, str]],
    *,
    kind: str = "original",
    seed: int = 0,
) -> tuple[Task, TaskRating]:
    task_id = make_id("task", question, [s.server_id for s in servers], seed, kind)
    task = Task(
        task_id=task_id,
        kind=kind,
        strategy="single_server" if len(servers) == 1 else "multi_server",
        question=question,
        target_tools=[TargetTool(server_id=s.server_id, server=s.name, tool=t) for s, t in targets],
        server_ids=[s.server_id for s in servers],
        generator="Gen",
        seed=seed,
    )
    rating = TaskRating(
        rating_id=make_id("rating", task_id), task_id=task_id, judge="Judge", keep=True, overall=4.0
    )
    return task, rating


def seed_store(store: Store, servers: list[Server], tasks: list[tuple[Task, TaskRating]]) -> None:
    store.upsert(servers)
    store.insert([t for t, _ in tasks] + [r for _, r in tasks])


def run_server_batch(
    server: Server,
    items: list[TrajectoryItem],
    settings: Settings,
    *,
    batch_id: str = "b",
    replay: dict[str, dict[str, Any]] | None = None,
    **options: Any,
) -> BatchResult:
    """One trajectory batch of `items` on one server, run to its end (tasks/trajectories.py's
    `generate_batch`); `options` are BatchOptions fields besides the settings' mcp and models."""
    batch = TrajectoryBatch(batch_id=batch_id, server_ids=[server.server_id], items=items)
    batch_options = BatchOptions(mcp=settings.mcp, models=settings.models, **options)
    entry = ServerEntry(server_id=server.server_id, name=server.name, spec=server.spec)
    return asyncio.run(
        generate_batch(batch, {server.server_id: entry}, batch_options, replay=replay)
    )


def seed_tiny_task(tmp_path: Path) -> tuple[Store, Server, Task]:
    """A store (tmp_path/toucan.duckdb) holding the tiny server (its calls logged to
    tmp_path/calls.log) and one kept task on it that needs two of its tools."""
    server = server_row(tiny_spec(tmp_path / "calls.log"))
    task, rating = kept_task(
        "Echo hello, then add 2 and 3.", [server], [(server, "echo"), (server, "add")]
    )
    store = Store(tmp_path / "toucan.duckdb")
    seed_store(store, [server], [(task, rating)])
    return store, server, task


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request["messages"] if m.get("role") == "tool"]


def agent_script(
    calls_per_turn: list[list[tuple[str, dict[str, Any]]]], answer: str = "Here is the answer."
) -> Rule:
    """A stateless script: turn n (counted by assistant messages so far) makes the calls of
    `calls_per_turn[n]`, then the model answers with `answer`."""

    def respond(request: dict[str, Any]) -> Rule:
        turn = sum(1 for m in request["messages"] if m.get("role") == "assistant")
        if turn < len(calls_per_turn):
            return Rule(tool_calls=calls_per_turn[turn])
        return Rule(text=answer)

    return Rule(respond=respond)


def react_script(
    calls_per_turn: list[list[tuple[str, dict[str, Any]]]], answer: str = "Here is the answer."
) -> Rule:
    """The same script in the ReAct text protocol."""

    def respond(request: dict[str, Any]) -> Rule:
        turn = sum(1 for m in request["messages"] if m.get("role") == "assistant")
        if turn < len(calls_per_turn):
            lines = ["Thought: I need tools."]
            for name, arguments in calls_per_turn[turn]:
                lines += [f"Action: {name}", f"Action Input: {json.dumps(arguments)}"]
            return Rule(text="\n".join(lines))
        return Rule(text=f"Thought: done\nFinal Answer: {answer}")

    return Rule(respond=respond)


def write_config(path: Path, base_url: str, **sections: Any) -> Path:
    """A YAML settings file for the flows: every model group on the fake server."""
    import yaml

    models = {
        "generators": [deployment("Gen", base_url)],
        "teachers": [deployment("Teacher-A", base_url)],
        "judge": [deployment("Judge", base_url, params={"temperature": 0})],
        "fallbacks": {},
    }
    document = {
        "models": models,
        "mcp": {"fleet_dir": str(fleet_dir()), **sections.pop("mcp", {})},
        **sections,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def first_user_text(request: dict[str, Any]) -> str:
    return next(str(m.get("content")) for m in request["messages"] if m.get("role") == "user")


def dispatch_script(
    calls_by_marker: dict[str, list[list[tuple[str, dict[str, Any]]]]],
    answer: str = "Here is the answer.",
) -> Rule:
    """One rule for many tasks and all styles: the question's marker picks the calls; a request
    without `tools` (react) is answered in the text protocol."""

    def respond(request: dict[str, Any]) -> Rule:
        question = first_user_text(request)
        marker = next((m for m in calls_by_marker if m in question), None)
        plan = calls_by_marker.get(marker, []) if marker else []
        turn = sum(1 for m in request["messages"] if m.get("role") == "assistant")
        react = not request.get("tools")
        if turn >= len(plan):
            return Rule(text=f"Thought: done\nFinal Answer: {answer}" if react else answer)
        if not react:
            return Rule(tool_calls=plan[turn])
        lines = ["Thought: calling tools"]
        for name, arguments in plan[turn]:
            lines += [f"Action: {name}", f"Action Input: {json.dumps(arguments)}"]
        return Rule(text="\n".join(lines))

    return Rule(respond=respond)
