"""Pipeline records seeded straight into a store, for the export and report tests.

One kept trajectory per subset, plus rows that must not be exported: a rejected one, one with
schema-invalid tool arguments. A tool result carries one secret of every kind (LEAKS) that the
export must remove.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from flows.runner import run_stage_async
from tasks.export_files import ExportSummary
from tests.bulk_store import fill_task_ratings, fill_tasks, fill_trajectories
from tests.trajectories.helpers import ok_server
from toucan.config import Settings
from toucan.ids import make_id, schema_hash
from toucan.records import (
    TASK_SCORES,
    Event,
    Score,
    Server,
    TargetTool,
    Task,
    TaskRating,
    Tool,
    Trajectory,
    TrajectoryRating,
    utc_now,
)
from toucan.store import Store


class Leak(NamedTuple):
    """One secret seeded into a tool result: the kind it is counted as, how it appears, and
    the parts of it that no exported file may contain."""

    kind: str
    text: str
    needles: tuple[str, ...]


LEAKS = (
    Leak(
        "openai_key", "key=sk-proj-Abc123Def456Ghi789Jkl012", ("sk-proj-Abc123Def456Ghi789Jkl012",)
    ),
    Leak(
        "github_token",
        "token ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        ("ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",),
    ),
    Leak("aws_access_key", "aws AKIAIOSFODNN7EXAMPLE", ("AKIAIOSFODNN7EXAMPLE",)),
    Leak(
        "slack_token", "slack xoxb-123456789012-abcdefghijkl", ("xoxb-123456789012-abcdefghijkl",)
    ),
    Leak("email", "contact ops.lead@acme-corp.io", ("ops.lead@acme-corp.io",)),
    Leak("local_path", "cfg /root/.config/secret.json", ("/root/.config",)),
    Leak("local_path", "file /home/alice/projects/notes.txt", ("/home/alice", "alice")),
    Leak(
        "bearer_token", "Authorization: Bearer abcdefghijklmnop123456", ("abcdefghijklmnop123456",)
    ),
    # the kinds the export used to write verbatim
    Leak(
        "aws_secret_key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ3vPq8Rt2",
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ3vPq8Rt2",),
    ),
    Leak(
        "stripe_key", "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dcXyZ9", ("4eC39HqLyjWDarjtT1zdp7dc",)
    ),
    Leak(
        "huggingface_token",
        "hub hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH",
        ("hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH",),
    ),
    Leak(
        "google_api_key",
        "maps AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        ("AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",),
    ),
    Leak(
        "jwt",
        "session eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6Ik"
        "pvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        ("eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV"),
    ),
    Leak("generic_secret", "DB_PASSWORD=Tr0ub4dor", ("Tr0ub4dor",)),
    Leak("generic_secret", "APP_SECRET=Zq8xK2mN7pL4", ("Zq8xK2mN7pL4",)),
    Leak("openai_key", "short sk-Ab3dE5fG7hJ9", ("sk-Ab3dE5fG7hJ9",)),
    Leak("local_path", "db /var/lib/toucan-seed/state.db", ("/var/lib",)),
    Leak("local_path", "site /srv/acme-www/index.html", ("/srv/", "acme-www")),
    Leak("local_path", "doc C:\\Users\\bob\\Documents\\plan.docx", ("C:\\Users", "\\bob")),
    Leak("local_path", "share \\\\fileserver\\team\\plan.docx", ("fileserver", "team")),
    Leak("local_path", "keys in ~/.ssh/id_rsa", ("~/.ssh",)),
    Leak(
        "private_key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        ("-----BEGIN RSA PRIVATE KEY-----", "MIIEpAIBAAKCAQEA"),
    ),
)
SEEDED_SECRETS = tuple(needle for leak in LEAKS for needle in leak.needles)
# what tools answer every day and the detector must leave alone
ORDINARY_TOOL_OUTPUT = [
    "commit 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39 (HEAD -> main)",
    "id 550e8400-e29b-41d4-a716-446655440000, parent 6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "[image: image/png, 48212 base64 chars]",
    "[resource file:///workspace/report.pdf: 2048 base64 chars]",
    "https://api.example.com/v1/users?page=2&sort=desc and https://example.com/tmp/x",
    "http://localhost:8080/home/index.html",
    "2025-06-01T14:03:22+02:00, 2024-01-31, 14:05:09.123Z",
    "/usr/bin/python3 -m venv /usr/local/venv; cat /etc/hosts > /dev/null",
    "GET /repos/acme/widgets/issues returns 200",
    "see /help, type /s, 3/4 of km/h and/or TCP/IP",
    "usage: tool --in /path/to/input.csv (or C:\\path\\to\\input.csv)",
    '{"gif": "R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==", "b64": "q+/a9/Zk+/b"}',
    '{"max_tokens": 384, "tokens_in": 12345, "token_expires_at": "2025-06-01T14:03:22Z"}',
    '{"password": "********", "secret_santa": true, "api_key": null, "token": "${API_TOKEN}"}',
    "The password: strong enough. A secret: Pineapple.",
    "next_page_token: CAEQAA; sk-learn-model; desk-organizer; task-sk-1",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "user@example.com wrote C:\\Windows\\System32\\drivers and C:\\Program Files\\Git\\bin",
]
FORECAST_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}
NOTE_SCHEMA = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
    "required": ["path", "text"],
}


def openai_tool(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": schema},
    }


WEATHER_TOOLS = [openai_tool("weather-get_forecast", "Forecast for a city.", FORECAST_SCHEMA)]
NOTES_TOOLS = [openai_tool("notes-write_note", "Write a note to a file.", NOTE_SCHEMA)]


def call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def tool_use_messages(question: str, arguments: dict[str, Any], result: str) -> list[dict]:
    return [
        {"role": "system", "content": "You are a helpful assistant with tools."},
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [call("c1", "weather-get_forecast", arguments)],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "weather-get_forecast", "content": result},
        {"role": "assistant", "content": "It will be sunny in Paris, 21 C."},
    ]


def secret_result() -> str:
    """A tool result (JSON text, as servers send it) with one of every LEAKS in it."""
    return json.dumps({"forecast": "sunny, 21 C", "debug": "\n".join(leak.text for leak in LEAKS)})


def task_rating(task_id: str, score: int = 4) -> TaskRating:
    return TaskRating(
        rating_id=make_id("trate", task_id),
        task_id=task_id,
        judge="GPT-4o-mini",
        scores={d: Score(reasoning=f"{d} looks fine", score=score) for d in TASK_SCORES},
        overall=float(score),
        keep=True,
    )


def trajectory_rating(trajectory_id: str, keep: bool = True) -> TrajectoryRating:
    return TrajectoryRating(
        rating_id=make_id("jrate", trajectory_id),
        trajectory_id=trajectory_id,
        judge="GPT-4o-mini",
        flags={"no_tool_call": False, "tool_execution_error": False},
        scores={
            "completeness": Score(reasoning="complete", score=5 if keep else 1),
            "conciseness": Score(reasoning="concise", score=4),
        },
        overall=4.5 if keep else 1.0,
        tool_accuracy={"desired_tools_used": 1.0, "order_correct": 1.0},
        keep=keep,
    )


def tool_row(server_id: str, name: str, schema: dict[str, Any]) -> Tool:
    return Tool(
        tool_id=make_id("tool", server_id, name),
        server_id=server_id,
        name=name,
        input_schema=schema,
        schema_hash=schema_hash(schema),
    )


def seed_servers(store: Store) -> tuple[Server, Server]:
    weather = ok_server("srv_weather", "weather", domain="Weather", license="MIT", tool_count=1)
    notes = ok_server(
        "srv_notes", "notes", domain="File Management", license="Apache-2.0", tool_count=1
    )
    tools = [
        tool_row("srv_weather", "get_forecast", FORECAST_SCHEMA),
        tool_row("srv_notes", "write_note", NOTE_SCHEMA),
    ]
    store.insert([weather, notes, *tools])
    return weather, notes


def make_trajectory(
    trajectory_id: str, task_id: str, kind: str, messages: list[dict], tools: list[dict], **extra
) -> Trajectory:
    calls = sum(len(m.get("tool_calls") or []) for m in messages if m["role"] == "assistant")
    return Trajectory(
        trajectory_id=trajectory_id,
        task_id=task_id,
        kind=kind,  # type: ignore[arg-type]
        teacher=extra.pop("teacher", "Kimi-K2-Turbo"),
        model="openai/kimi",
        messages=messages,
        tools=tools,
        tool_name_map={
            t["function"]["name"]: {
                "server_id": "srv_weather" if "weather" in t["function"]["name"] else "srv_notes",
                "tool": t["function"]["name"].split("-", 1)[1],
            }
            for t in tools
        },
        turns=sum(m["role"] == "assistant" for m in messages),
        tool_calls=calls,
        usage={"prompt_tokens": 900, "completion_tokens": 120},
        cost_usd=0.0012,
        stop_reason="final_answer",
        **extra,
    )


def seed_pipeline(store: Store) -> dict[str, str]:
    """Seed every kind of row; returns the trajectory ids by role."""
    seed_servers(store)
    target = [TargetTool(server_id="srv_weather", server="weather", tool="get_forecast")]
    original = Task(
        task_id="task_orig",
        strategy="single_server",
        question="What is the weather in Paris tomorrow?",
        target_tools=target,
        server_ids=["srv_weather"],
        generator="Qwen2-72B-Instruct",
    )
    irrelevant = original.model_copy(
        update={
            "task_id": "task_irr",
            "kind": "irrelevant",
            "parent_id": "task_orig",
            "server_ids": ["srv_notes"],
        }
    )
    diversified = original.model_copy(
        update={
            "task_id": "task_div",
            "kind": "diversified",
            "parent_id": "task_orig",
            "question": "As a marathon organiser, I need the Paris forecast for race day.",
        }
    )
    bad_args_task = original.model_copy(update={"task_id": "task_bad"})
    store.insert([original, irrelevant, diversified, bad_args_task])
    store.insert([task_rating("task_orig"), task_rating("task_div", 5), task_rating("task_bad")])

    ids = {
        "original": "traj_orig",
        "irrelevant": "traj_irr",
        "diversified": "traj_div",
        "multi_turn": "traj_multi",
        "rejected": "traj_rejected",
        "bad_args": "traj_bad_args",
    }
    multi_messages = [
        *tool_use_messages(original.question, {"city": "Paris"}, "sunny, 21 C"),
        {"role": "user", "content": "And for the next 3 days?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [call("c2", "weather-get_forecast", {"city": "Paris", "days": 3})],
        },
        {"role": "tool", "tool_call_id": "c2", "content": "sunny, then rain"},
        {"role": "assistant", "content": "Sunny, then rain on the third day."},
    ]
    trajectories = [
        make_trajectory(
            ids["original"],
            "task_orig",
            "original",
            tool_use_messages(original.question, {"city": "Paris"}, secret_result()),
            WEATHER_TOOLS,
        ),
        make_trajectory(
            ids["irrelevant"],
            "task_irr",
            "irrelevant",
            [
                {"role": "system", "content": "You are a helpful assistant with tools."},
                {"role": "user", "content": original.question},
                {"role": "assistant", "content": "None of my tools can get a weather forecast."},
            ],
            NOTES_TOOLS,
            teacher="GPT-4.5-Turbo",
        ),
        make_trajectory(
            ids["diversified"],
            "task_div",
            "diversified",
            tool_use_messages(diversified.question, {"city": "Paris", "days": 1}, "sunny"),
            WEATHER_TOOLS,
        ),
        make_trajectory(
            ids["multi_turn"],
            "task_orig",
            "multi_turn",
            multi_messages,
            WEATHER_TOOLS,
            parent_id=ids["original"],
            requested_turns=3,
            completed_turns=2,
        ),
        make_trajectory(
            ids["rejected"],
            "task_orig",
            "original",
            tool_use_messages(original.question, {"city": "Rome"}, "rain"),
            WEATHER_TOOLS,
        ),
        make_trajectory(
            ids["bad_args"],
            "task_bad",
            "original",
            tool_use_messages(original.question, {"town": "Paris", "days": 0}, "?"),
            WEATHER_TOOLS,
        ),
    ]
    store.insert(trajectories)
    store.insert(
        [
            trajectory_rating(t.trajectory_id, keep=t.trajectory_id != ids["rejected"])
            for t in trajectories
        ]
    )
    seed_events(store)
    return ids


def seed_events(store: Store) -> None:
    start = utc_now() - timedelta(minutes=5)
    events = []
    for i in range(6):
        for stage, model, server in (
            ("synthesize", "Qwen2-72B-Instruct", "weather"),
            ("trajectories", "Kimi-K2-Turbo", "weather"),
            ("trajectories", "GPT-4.5-Turbo", "notes"),
        ):
            events.append(
                Event(
                    event_id=make_id("evt", stage, model, i),
                    run_id="run_seed",
                    stage=stage,
                    kind="llm_call",
                    model=model,
                    server=server,
                    status="ok" if i % 3 else "error",
                    started_at=start + timedelta(seconds=10 * i),
                    ended_at=start + timedelta(seconds=10 * i + 2),
                    latency_ms=2000.0,
                    tokens_in=800 + i,
                    tokens_out=100 + i,
                    cost_usd=0.001 * (i + 1),
                )
            )
    store.insert(events)


def fill_kept_trajectories(store: Store, count: int) -> None:
    """`count` kept trajectories (one weather tool call each) with their tasks and ratings,
    written in bulk (tests/bulk_store.py): for measuring the export at scale."""
    weather, _ = seed_servers(store)
    fill_tasks(store, count, [weather.server_id], tools=["get_forecast"])
    fill_task_ratings(store)
    messages = tool_use_messages("QUESTION", {"city": "Paris"}, "sunny, 21 C")
    template = make_trajectory(
        "traj_template", "task_template", "original", messages, WEATHER_TOOLS
    )
    fill_trajectories(store, template, trajectory_rating(template.trajectory_id))


def export_to(
    store: Store, settings: Settings, out: Path, formats: list[str], **options: Any
) -> ExportSummary:
    """The export stage on plain asyncio (the runner without Prefect)."""
    return asyncio.run(
        run_stage_async("export", settings, store, out_dir=out, formats=formats, **options)
    )
