"""Extension 2: persona and constraint variants through the fake model server, real store."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from flows.runner import run_stage_async
from tasks.diversify import load_personas
from tests.fake_llm import FakeLlm, Rule
from tests.trajectories.helpers import fake_settings
from toucan.errors import ConfigError
from toucan.ids import make_id
from toucan.records import TargetTool, Task, TaskRating
from toucan.store import Store

QUESTION = "Find the weather in Lyon and then add a note about packing an umbrella."
PERSONA_MARK = "moves the task to another persona"
CONSTRAINT_MARK = "add realistic constraints"


def seed_kept_task(store: Store) -> Task:
    task = Task(
        task_id="task_lyon",
        strategy="multi_server",
        question=QUESTION,
        target_tools=[
            TargetTool(server_id="srv_w", server="weather", tool="forecast"),
            TargetTool(server_id="srv_n", server="notes", tool="add_note"),
        ],
        server_ids=["srv_w", "srv_n"],
        generator="Gen",
    )
    store.insert(
        [
            task,
            TaskRating(
                rating_id=make_id("r", "lyon"), task_id=task.task_id, judge="Judge", keep=True
            ),
        ]
    )
    return task


def variations(request: dict[str, Any]) -> dict[str, Any]:
    prompt = request["messages"][-1]["content"]
    mode = "persona" if PERSONA_MARK in prompt else "constraints"
    return {
        "variations": [
            {
                "persona": f"p{i}",
                "context": f"setting {i}",
                "constraints": f"budget {i}",
                "question": f"As {mode} variant {i}, check the Lyon forecast and note what to pack.",
            }
            for i in range(2)
        ]
    }


@pytest.fixture
def fake(monkeypatch) -> FakeLlm:
    with FakeLlm(default=variations) as server:
        yield server


def test_each_kept_task_gets_persona_and_constraint_variants_once(fake, tmp_path):
    store = Store(tmp_path / "toucan.duckdb")
    parent = seed_kept_task(store)
    settings = fake_settings(fake.base_url, store.path, extensions={"diversify_variants": 2})
    summary = asyncio.run(run_stage_async("diversify", settings, store))
    assert summary.variants_written == 4 and summary.by_mode == {"persona": 2, "constraints": 2}
    rows = store.select(Task, "kind = 'diversified' ORDER BY task_id")
    assert len(rows) == 4 and len({r.question for r in rows}) == 4
    for row in rows:
        assert (row.parent_id, row.status) == (parent.task_id, "ok")
        assert row.target_tools == parent.target_tools  # same tools, same order
        assert row.server_ids == parent.server_ids and row.prompt_hash
    prompts = [r["messages"][-1]["content"] for r in fake.requests]
    assert all(QUESTION in p for p in prompts)
    persona_prompt = next(p for p in prompts if PERSONA_MARK in p)
    persona_names = {p.name for p in load_personas()}
    listed = [n for n in persona_names if n in persona_prompt]
    assert len(listed) == 2  # two distinct personas drawn for two variants
    assert any(CONSTRAINT_MARK in p for p in prompts)

    calls = fake.calls.total
    again = asyncio.run(run_stage_async("diversify", settings, store))
    assert (again.already_done, again.variants_written) == (2, 0)
    assert fake.calls.total == calls  # nothing asked again
    assert store.count(Task, "kind = 'diversified'") == 4


def test_unparseable_and_unchanged_replies_become_rows_with_reasons(fake, tmp_path):
    store = Store(tmp_path / "toucan.duckdb")
    seed_kept_task(store)

    def stubborn(request: dict[str, Any]) -> Any:  # also refuses the repair attempt
        if any(PERSONA_MARK in str(m.get("content")) for m in request["messages"]):
            return "I would rather not write JSON today."
        return {"variations": [{"question": QUESTION}]}

    fake.script([Rule(respond=stubborn)])
    settings = fake_settings(fake.base_url, store.path, extensions={"diversify_variants": 1})
    summary = asyncio.run(run_stage_async("diversify", settings, store))
    assert summary.variants_written == 0
    rows = {r.metadata.get("mode"): r for r in store.select(Task, "kind = 'diversified'")}
    assert (rows["persona"].status, rows["persona"].reason) == ("error", "unparseable_reply")
    assert "rather not" in (rows["persona"].raw_reply or "")
    assert (rows["constraints"].status, rows["constraints"].reason) == (
        "rejected",
        "unchanged_question",
    )
    assert json.loads(rows["constraints"].raw_reply or "{}")["variations"]


def test_the_shipped_persona_list_is_varied_and_a_bad_file_is_a_config_error(tmp_path):
    personas = load_personas()
    assert len(personas) >= 40 and len({p.domain for p in personas}) >= 30
    bad = tmp_path / "personas.yaml"
    bad.write_text("personas: [{name: x}]")
    with pytest.raises(ConfigError):
        load_personas(str(bad))
