"""Stages 2-3 with and without a prompt budget, against the fake model server over real HTTP:
a budget shrinks what the model is shown and caps its reply; no budget changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from flows.runner import run_stage_async
from tests.fake_llm import FakeLlm
from tests.synthesize.seed import CATALOG, JUDGE, fake_settings
from toucan.records import Task
from toucan.store import Store

BUDGET = {
    "tools_per_server": 1,
    "description_chars": 8,
    "reasoning_chars": 40,
    "question_chars": 200,
}
ALL_TOOLS = {tool for _, _, tools in CATALOG.values() for tool in tools}


def run_stages(config: Path, store: Store, **overrides: Any) -> None:
    settings = fake_settings(config, synthesize={"max_tools": 1}, **overrides)
    stage_params = {"strategies": ["single_server"], "limit": 5, "seed": 0}
    asyncio.run(run_stage_async("synthesize", settings, store, **stage_params))
    asyncio.run(run_stage_async("filter_tasks", settings, store))


def prompt_text(request: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in request["messages"])


def tools_named(text: str) -> set[str]:
    return {tool for tool in ALL_TOOLS if f"{tool}:" in text}


def schema_text(request: dict[str, Any]) -> str:
    return json.dumps(request["response_format"])


def test_a_budget_shows_one_tool_per_server_and_caps_reply_fields(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    run_stages(config_path, store, models={"prompt_budget": BUDGET})
    generator = [r for r in fake_llm.requests if r.get("model") != JUDGE]
    judge = [r for r in fake_llm.requests if r.get("model") == JUDGE]
    assert len(generator) == 5 and len(judge) == 5
    for request in generator:
        shown = tools_named(prompt_text(request))
        choice = request["response_format"]["json_schema"]["schema"]["$defs"]["ToolChoice"]
        allowed = {tool for pair in choice["anyOf"] for tool in pair["properties"]["tool"]["enum"]}
        assert len(shown) == 1 and allowed == shown  # the model may only pick a shown tool
        assert '"maxLength": 200' in schema_text(request)
        assert '"maxLength": 40' in schema_text(request)
    tasks = {t.task_id: t for t in store.select(Task)}
    assert all(t.status == "ok" for t in tasks.values())
    multi_tool = [t for t in tasks.values() if len(CATALOG[t.target_tools[0].server][2]) > 1]
    assert multi_tool and all("shown_tools" in t.metadata for t in multi_tool)
    for request in judge:
        text = prompt_text(request)
        [task] = [t for t in tasks.values() if t.question in text]
        assert tools_named(text) == {t.tool for t in task.target_tools}  # targets always shown
        assert '"maxLength": 40' in schema_text(request)


def test_without_a_budget_prompts_show_every_tool_and_replies_are_uncapped(
    store: Store, config_path: Path, fake_llm: FakeLlm
) -> None:
    run_stages(config_path, store)
    for request in fake_llm.requests:
        assert "maxLength" not in schema_text(request)
        text = prompt_text(request)
        server = next(name for name in CATALOG if f"{name}" in text)
        assert tools_named(text) == set(CATALOG[server][2])
    assert all("shown_tools" not in t.metadata for t in store.select(Task))
