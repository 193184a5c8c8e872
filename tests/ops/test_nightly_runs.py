"""Issue 12's done-when, on a real local Prefect server: the `pipeline` deployment triggered
with `{}` parameters, as its nightly schedule does, three times on one project.

`toucan server --project-dir PROJECT` is started from another directory. The project holds a
toucan.yaml (every model on the fake server, two fleet servers installed: the others are
rejected at onboarding in a moment) and nothing else: the store and the fleet are relative
paths in it, which the deployments carry as absolute ones. The first run does every stage and
exports; the kept tasks its extensions made after the trajectory stage are the store's growth
the second run picks up (and exports again, in its own folder); the third finds nothing new and
writes no export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_llm import FakeLlm, Rule, answer_from_schema
from tests.ops.test_server_integration import RUN_TIMEOUT_S, TERMINAL, toucan_server, wait_for
from tests.synthesize.seed import competent_generator, judge_with
from tests.trajectories.helpers import fleet_dir
from toucan.records import Server, Task, Trajectory
from toucan.store import Store

FLEET_SERVERS = ("mcp-server-time", "calculator")  # two domains: irrelevance can pair them
JUDGE, TEACHER = "Judge", "Teacher"
# what a question about each server's work says, without naming a tool
TOPIC = {"mcp-server-time": "the clock", "calculator": "some arithmetic"}
TOOLS = {
    "get_current_time": ("mcp-server-time", {"timezone": "UTC"}),
    "convert_time": (
        "mcp-server-time",
        {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
    ),
    "calculate": ("calculator", {"expression": "2 + 3"}),
}


def user_text(request: dict[str, Any]) -> str:
    return " ".join(str(m.get("content")) for m in request["messages"] if m["role"] == "user")


def teacher(request: dict[str, Any]) -> Rule:
    """Calls each offered tool once when the user asked about its server's topic, then
    answers; declines when no offered tool fits (an irrelevance task)."""
    offered = [tool["function"]["name"] for tool in request["tools"]]
    asked = user_text(request)
    fitting = [name for name in offered if TOPIC[TOOLS[name][0]] in asked]
    if not fitting:
        return Rule(text="None of my tools can help with that request, sorry.")
    if request["messages"][-1]["role"] == "tool":
        return Rule(text=f"Done: {request['messages'][-1]['content'][:200]}")
    return Rule(tool_calls=[(name, TOOLS[name][1]) for name in fitting])


def topic_of(text: str) -> str:
    return next(topic for server, topic in TOPIC.items() if server in text)


def pipeline_model(request: dict[str, Any]) -> Any:
    """A generator, judge, teacher and simulated user good enough for every stage to keep
    its rows; the questions name their server's topic, which is how the teacher knows."""
    if request.get("tools"):
        return teacher(request)
    if request.get("model") == JUDGE:
        return judge_with(5)(request)
    schema = request.get("response_format", {}).get("json_schema", {}).get("schema", {})
    properties = schema.get("properties", {})
    if "ToolChoice" in schema.get("$defs", {}):  # synthesize
        reply = competent_generator(request)
        reply["question"] += f" It is about {TOPIC[reply['target_tools'][0]['server']]}."
        return reply
    if "variations" in properties:  # diversify
        reply = answer_from_schema(request)
        topic = topic_of(user_text(request))
        reply["variations"][0]["question"] = f"As a night-shift nurse, I need {topic} done now."
        return reply
    if "question" in properties:  # the multi-turn user
        return {"question": f"Thanks. Please do {topic_of_history(request)} once more."}
    if "sub_questions" in properties:  # multi-turn split
        topic = topic_of_history(request)
        return {"sub_questions": [f"First, {topic} for Lisbon.", f"Then {topic} for Osaka."]}
    return answer_from_schema(request)


def topic_of_history(request: dict[str, Any]) -> str:
    text = user_text(request)
    return next(topic for topic in TOPIC.values() if topic in text)


def write_project(project: Path, base_url: str) -> None:
    fleet = project / "fleet"
    (fleet / "venvs").mkdir(parents=True)
    for name in FLEET_SERVERS:
        (fleet / "venvs" / name).symlink_to(fleet_dir().resolve() / "venvs" / name)
    (fleet / "seed").symlink_to(fleet_dir().resolve() / "seed")

    def deployment(name: str) -> dict[str, Any]:
        return {"name": name, "model": f"openai/{name}", "api_base": base_url, "timeout_s": 60}

    config = {
        "profile": "cloud",
        "store": "data/toucan.duckdb",
        "mcp": {"fleet_dir": "fleet"},
        "models": {
            "generators": [deployment("Gen")],
            "teachers": [deployment(TEACHER)],
            "judge": [deployment(JUDGE)],
            "fallbacks": {},
            "route_to_local": False,
        },
        "synthesize": {"strategies": ["single_server"], "per_server": 1},
        "extensions": {"diversify_variants": 1, "multi_turn_user_turns": 1},
    }
    (project / "toucan.yaml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML


def export_folders(store: Path) -> list[Path]:
    exports = store.parent / "exports"
    if not exports.exists():
        return []
    return sorted(p for p in exports.iterdir() if p.is_dir() and not p.is_symlink())


def run_pipeline(client: httpx.Client, deployment_id: str) -> dict[str, Any]:
    def create() -> dict[str, Any] | None:
        # a SQLite-backed server answers 503 while its database is busy; Prefect's own client
        # retries those the same way
        created = client.post(
            f"/deployments/{deployment_id}/create_flow_run", json={"parameters": {}}
        )
        assert created.status_code < 300 or created.status_code == 503, created.text
        return created.json() if created.status_code < 300 else None

    flow_run = wait_for(create, 120, "the server to accept the flow run")

    def finished() -> dict[str, Any] | None:
        answer = client.get(f"/flow_runs/{flow_run['id']}")
        if answer.status_code == 503:  # busy, as above
            return None
        run = answer.json()
        return run if run["state_type"] in TERMINAL else None

    return wait_for(finished, RUN_TIMEOUT_S * 3, "the pipeline run to finish")


def run_logs(client: httpx.Client, flow_run_ids: list[str]) -> list[str]:
    found = client.post(
        "/logs/filter", json={"logs": {"flow_run_id": {"any_": flow_run_ids}}, "limit": 200}
    ).json()
    return [entry["message"] for entry in found]


@pytest.mark.timeout(1800)
@pytest.mark.slow
def test_the_nightly_pipeline_exports_each_run_in_its_own_folder_and_nothing_when_nothing_is_new(
    tmp_path: Path,
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = project / "data" / "toucan.duckdb"
    with FakeLlm(default=pipeline_model) as fake:
        write_project(project, fake.base_url)
        started = toucan_server(tmp_path, "--project-dir", str(project), cwd=elsewhere)
        with started as (api, _, log), httpx.Client(base_url=api, timeout=30) as client:
            deployment = client.get("/deployments/name/pipeline/pipeline").json()
            assert deployment["job_variables"] == {
                "working_dir": str(project),
                "env": {
                    "TOUCAN_STORE": str(store),
                    "TOUCAN_MCP__FLEET_DIR": str(project / "fleet"),
                    "TOUCAN_CONFIG": str(project / "toucan.yaml"),
                },
            }
            first = run_pipeline(client, deployment["id"])
            assert first["state_name"] == "Completed", (first["state"], log.read_text()[-4000:])
            servers = Store(store).select(Server, "status = 'ok'")
            assert {s.name for s in servers} == set(FLEET_SERVERS)  # the fleet was found
            (first_export,) = export_folders(store)
            first_tasks = Store(store).count(Task)
            first_trajectories = Store(store).count(Trajectory)

            second = run_pipeline(client, deployment["id"])
            assert second["state_name"] == "Completed", (second["state"], log.read_text()[-4000:])
            assert Store(store).count(Trajectory) > first_trajectories
            assert Store(store).count(Task) == first_tasks  # it ran the tasks the first made
            folders = export_folders(store)
            assert len(folders) == 2 and first_export in folders

            third = run_pipeline(client, deployment["id"])
            assert third["state_name"] == "Completed", (third["state"], log.read_text()[-4000:])
            assert export_folders(store) == folders  # nothing new: no new export

            children = client.post(
                "/flow_runs/filter",
                json={"flow_runs": {"parent_flow_run_id": {"any_": [second["id"]]}}},
            ).json()
            lines = run_logs(client, [second["id"], *(c["id"] for c in children)])
    second_export = next(f for f in folders if f != first_export)
    assert any(line == f"export: output in {second_export}" for line in lines), lines
    assert any(line.startswith("trajectories: planned ") for line in lines), lines
