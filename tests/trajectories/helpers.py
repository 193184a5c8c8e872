"""Shared set-up for the trajectory tests: settings pointing at the fake model server, a store
seeded with servers, kept tasks and their ratings, and scripted agent replies."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp_env.specs import StdioSpec
from tests.fake_llm import Rule
from tests.mcp_env.conftest import with_writable_log
from toucan.config import Settings, load_settings
from toucan.ids import make_id
from toucan.records import Server, TargetTool, Task, TaskRating
from toucan.store import Store

TINY_SERVER = Path(__file__).resolve().parents[1] / "servers" / "tiny_server.py"
FAKE_KEY_ENV = "TOUCAN_TEST_FAKE_KEY"
os.environ.setdefault(FAKE_KEY_ENV, "sk-fake")


def deployment(name: str, base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": f"openai/{name}",
        "api_base": base_url,
        "api_key_env": FAKE_KEY_ENV,
        "max_retries": 1,
        "timeout_s": 30,
        **extra,
    }


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


def server_row(spec: Any) -> Server:
    return Server(
        server_id=spec.server_id,
        name=spec.name,
        source=spec.source,
        transport=spec.transport,
        status="ok",
        spec=spec.model_dump(mode="json"),
    )


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
