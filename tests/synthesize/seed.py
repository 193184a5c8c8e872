"""Test set-up shared by the stage 2 and 3 tests: a small catalog written straight into a real
DuckDB store, settings pointing every deployment at the fake model server, and reply functions
that answer the way a competent generator / judge would (derived from the request's schema)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.trajectories.helpers import deployment as fake_deployment
from toucan.config import Settings, load_settings
from toucan.ids import make_id, schema_hash
from toucan.records import Server, Tool
from toucan.store import Store

FAKE_KEY_ENV = "TOUCAN_TEST_FAKE_LLM_KEY"
# the five generator deployments of the shipped config (the paper's names)
GENERATORS = [d.name for d in load_settings(profile="cloud").models.generators]
JUDGE = "GPT-4o-mini"
TEACHER = "GPT-4.5-Turbo"

CATALOG: dict[str, tuple[str, bool, dict[str, str]]] = {
    "Calculator": (
        "Data Analysis & Processing",
        True,
        {"add": "Add two numbers", "multiply": "Multiply two numbers", "divide": "Divide a by b"},
    ),
    "Weather Station": (
        "Weather",
        True,
        {"get_forecast": "Forecast for a city", "get_alerts": "Weather alerts for a region"},
    ),
    "Notes": (
        "Daily Productivity",
        True,
        {
            "create_note": "Create a note",
            "search_notes": "Search notes by text",
            "delete_note": "Delete a note",
        },
    ),
    "Clock": (
        "Time & Calendar",
        False,
        {"current_time": "Current time in a zone", "convert_timezone": "Convert a time"},
    ),
    "Ledger": (
        "Financial Services",
        False,
        {"record_expense": "Record an expense", "monthly_total": "Total spent in a month"},
    ),
}

WORDS = [
    "budget",
    "trip",
    "invoice",
    "garden",
    "recipe",
    "meeting",
    "quarterly",
    "report",
    "tomorrow",
    "morning",
    "Lisbon",
    "Osaka",
    "sister",
    "birthday",
    "marathon",
    "training",
    "spreadsheet",
    "warehouse",
    "inventory",
    "customer",
    "refund",
    "conference",
    "keynote",
    "deadline",
    "Friday",
    "weekly",
    "groceries",
    "mortgage",
    "savings",
    "holiday",
    "flight",
    "hotel",
    "museum",
    "concert",
    "rehearsal",
    "thesis",
    "chapter",
    "experiment",
    "lab",
    "samples",
    "bakery",
    "orders",
    "bicycle",
    "repair",
    "neighbour",
    "party",
    "playlist",
    "podcast",
    "episode",
    "interview",
    "hiring",
    "onboarding",
    "laptop",
    "backup",
    "photos",
    "album",
    "wedding",
    "guests",
    "seating",
    "chart",
    "volunteer",
    "shift",
    "library",
    "seminar",
    "homework",
    "chemistry",
    "algebra",
    "vaccine",
    "appointment",
    "dentist",
    "pharmacy",
    "prescription",
]


def seed_servers(store: Store, source: str = "fleet") -> list[Server]:
    servers, tools = [], []
    for usage, (name, (domain, featured, tool_map)) in enumerate(CATALOG.items()):
        server_id = make_id("server", source, name)
        servers.append(
            Server(
                server_id=server_id,
                name=name,
                source=source,
                transport="stdio",
                status="ok",
                domain=domain,
                domain_source="catalog",
                description=f"The {name} server.",
                tool_count=len(tool_map),
                usage_count=10 * (usage + 1),
                featured=featured,
            )
        )
        for tool_name, description in tool_map.items():
            input_schema = {"type": "object", "properties": {"x": {"type": "string"}}}
            digest = schema_hash(input_schema)
            tools.append(
                Tool(
                    tool_id=make_id("tool", server_id, tool_name, digest),
                    server_id=server_id,
                    name=tool_name,
                    description=description,
                    input_schema=input_schema,
                    schema_hash=digest,
                )
            )
    store.insert([*servers, *tools])
    return servers


def deployment(name: str, base_url: str, **extra: Any) -> dict[str, Any]:
    fields = {"timeout_s": 10, **extra}  # a test may set its own timeout
    return fake_deployment(name, base_url, api_key_env=FAKE_KEY_ENV, **fields)


def write_config(
    path: Path,
    base_url: str,
    *,
    per_deployment: dict[str, dict[str, Any]] | None = None,
    patience_s: float = 5.0,
    **sections: Any,
) -> Path:
    """A YAML config (usable with --config) routing every deployment to the fake server."""
    extra = per_deployment or {}
    config = {
        "profile": "cloud",
        "models": {
            "generators": [deployment(n, base_url, **extra.get(n, {})) for n in GENERATORS],
            "teachers": [deployment(TEACHER, base_url)],
            "judge": [
                deployment(JUDGE, base_url, params={"temperature": 0}, **extra.get(JUDGE, {}))
            ],
            "rate_limit_patience_s": patience_s,
        },
        **sections,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def fake_settings(config_path: Path, **overrides: Any) -> Settings:
    return load_settings(config_path, profile="cloud", overrides=overrides)


def request_digest(request: dict[str, Any]) -> int:
    text = json.dumps([request.get("messages", []), request.get("seed")], sort_keys=True)
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def schema_of(request: dict[str, Any]) -> dict[str, Any]:
    return request["response_format"]["json_schema"]["schema"]


def good_question(request: dict[str, Any]) -> str:
    digest = request_digest(request)
    picked = [WORDS[(digest >> (4 * i)) % len(WORDS)] for i in range(12)]
    return " ".join(picked) + f" {digest % 100000}?"


def competent_generator(request: dict[str, Any]) -> dict[str, Any]:
    """Picks existing (server, tool) pairs from the request's schema, spread over the servers."""
    schema = schema_of(request)
    pairs = schema["$defs"]["ToolChoice"]["anyOf"]
    count = schema["properties"]["target_tools"]["minItems"]
    targets = []
    for index in range(count):
        pair = pairs[index % len(pairs)]["properties"]
        tools = pair["tool"]["enum"]
        targets.append(
            {"server": pair["server"]["const"], "tool": tools[(index // len(pairs)) % len(tools)]}
        )
    return {
        "server_analysis": "fits",
        "cross_server_workflow": "chained",
        "target_tools": targets,
        "question": good_question(request),
    }


def judge_with(score: int | dict[str, int]) -> Any:
    def respond(request: dict[str, Any]) -> dict[str, Any]:
        dims = schema_of(request)["properties"]
        return {
            dim: {
                "reasoning": f"because {dim}",
                "score": score[dim] if isinstance(score, dict) else score,
            }
            for dim in dims
        }

    return respond


def is_judge_request(request: dict[str, Any]) -> bool:
    return request.get("model") == JUDGE


def competent_model(request: dict[str, Any]) -> dict[str, Any]:
    """Default reply for the fake server: a good generator and a judge giving 5s."""
    if is_judge_request(request):
        return judge_with(5)(request)
    return competent_generator(request)


def stage_model(judge: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """The fake model of every single-call stage: `judge` for judge requests, a competent
    generator for tasks, and schema-true persona variants (diversify) with the task's question."""

    def reply(request: dict[str, Any]) -> Any:
        if is_judge_request(request):
            return judge(request)
        variations = schema_of(request)["properties"].get("variations")
        if variations is None:
            return competent_generator(request)
        return {
            "variations": [
                {
                    "persona": f"persona {i}",
                    "context": f"setting {i}",
                    "constraints": f"within budget {i}",
                    "question": f"Variant {i}: {good_question(request)}",
                }
                for i in range(variations.get("minItems", 1))
            ]
        }

    return reply
