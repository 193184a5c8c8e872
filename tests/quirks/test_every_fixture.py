"""Issue 10's rule in one place: every fixture of the MCP quirk collection is onboarded by the
onboard flow into a DuckDB store with the verdict a user expects, and a trajectory against
the fake model server that calls the fixture's quirky tool is `ok` (tests/quirks/cases.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import yaml

from flows.registry import onboard_flow
from flows.runner import run_stage_async
from tests.fake_llm import FakeLlm, fake_llm
from tests.mcp_env.conftest import QUIRKS, read_raw_log
from tests.quirks.cases import (
    CASES,
    COLLECTION,
    PROGRESS_MCP,
    Observed,
    QuirkCase,
    fixture_file_names,
    read_config,
    verdict_of,
)
from tests.trajectories.helpers import agent_script, fake_settings, kept_task, seed_store
from toucan.records import Server, Tool, Trajectory
from toucan.store import Store

__all__ = ["fake_llm"]
ONBOARDED = "onboarded.duckdb"
# the box is shared and slow to import the mcp package the HTTP fixture servers start with
MCP = {"connect_timeout_s": 60}


@pytest.fixture(scope="module")
def onboarded(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One onboard flow run over every case; the folder holding its store and RAW_LOGs."""
    folder = tmp_path_factory.mktemp("quirks")
    catalog = folder / "catalog.json"
    catalog.write_text(json.dumps({"servers": [case.entry(folder) for case in CASES]}))
    config = folder / "toucan.yaml"
    config.write_text(yaml.safe_dump({"onboard": {"retries": 0}, "mcp": MCP}))
    onboard_flow(
        catalogs=[str(catalog)],
        store=str(folder / ONBOARDED),
        config=str(config),
        profile="cloud",
    )
    return folder


def case_id(case: QuirkCase) -> str:
    return case.name


def test_every_fixture_of_the_collection_is_copied_here_and_has_a_case() -> None:
    assert [name for name in COLLECTION if not (QUIRKS / name).is_file()] == []
    assert (QUIRKS / "rawserver.py").is_file()
    assert fixture_file_names() == sorted(COLLECTION)


def test_the_short_progress_fixture_is_the_collections_job_scaled_below_the_idle_timeout() -> None:
    [original] = read_config("progress.json")["tools"]
    short = {tool["name"]: tool for tool in read_config("progress_short.json")["tools"]}
    assert short["long_job"] | {"description": ""} == original | {"description": ""}
    behaviour = read_config("progress_short.json")["behaviours"]["long_job"]
    # what makes the case a test of progress: silence alone would time the call out
    assert behaviour["progress_every"] < PROGRESS_MCP["call_timeout_s"] < behaviour["delay"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_onboarding_gives_the_verdict_a_user_expects(case: QuirkCase, onboarded: Path) -> None:
    store = Store(onboarded / ONBOARDED)
    [server] = store.select(Server, "name = ?", [case.name])
    tools = store.select(Tool, "server_id = ? AND current", [server.server_id])
    assert verdict_of(server, tools) == case.verdict
    assert len(tools) == server.tool_count  # each tool stored once


def called_on_server(received: list[dict]) -> list[tuple[str, dict]]:
    """(tool, arguments) of every tools/call a rawserver received."""
    calls = [entry["recv"] for entry in received if "recv" in entry]
    return [
        (call["params"]["name"], call["params"].get("arguments") or {})
        for call in calls
        if call.get("method") == "tools/call"
    ]


@pytest.mark.parametrize("case", [case for case in CASES if case.calls], ids=case_id)
def test_a_trajectory_calling_the_quirky_tool_is_ok(
    case: QuirkCase, onboarded: Path, fake_llm: FakeLlm, tmp_path: Path
) -> None:
    store = Store(tmp_path / "t.duckdb")
    shutil.copyfile(onboarded / ONBOARDED, store.path)  # this case's trajectory only
    [server] = store.select(Server, "name = ?", [case.name])
    called = [call for turn in case.calls for call in turn]
    task = kept_task("Please use the tools.", [server], [(server, name) for name, _ in called])
    seed_store(store, [], [task])
    fake_llm.script([*case.rules, agent_script(case.calls)])
    settings = fake_settings(
        fake_llm.base_url,
        store.path,
        teacher=case.teacher,
        mcp=MCP | case.mcp,
        trajectories={"max_turns": len(case.calls) + 1},
    )
    log = Path(server.spec["env"]["RAW_LOG"]) if server.spec.get("env") else None
    before = len(read_raw_log(log)) if log else 0

    asyncio.run(run_stage_async("trajectories", settings, store))

    [row] = store.select(Trajectory)
    assert (row.status, row.stop_reason) == ("ok", "final_answer"), row.metadata
    assert [(e.tool, e.is_error) for e in row.tool_call_log] == [(n, False) for n, _ in called]
    received = read_raw_log(log)[before:] if log else []
    if log:  # the server got each call as the model made it
        assert called_on_server(received) == called
    assert case.check is not None
    case.check(Observed(row, fake_llm.requests, received, store))
