"""Export scrubbing throughput: strings/s and rows/s of `Scrubber` on a realistic trajectory row.

    .venv/bin/python bench/bench_scrub.py [--seconds 5] [--repeats 3]

The row is what `build_export_row` scrubs for one multi-tool trajectory: messages (system
prompt, question, tool calls, tool results shaped like the fleet's git, fetch, filesystem,
time and search servers: SHAs, UUIDs, URLs, ISO dates, an image marker, sandbox paths, one
e-mail), the offered tools with their schemas, the assessments and the row metadata. Prints
the median of the repeats, with the detector's cache of short strings warm (keys and roles
repeat across the rows of an export) and cold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.scrub import Scrubber  # noqa: E402

GIT_LOG = "\n".join(
    f"commit {i:02x}3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a\n"
    f"Author: Dev {i} <dev{i}@users.noreply.github.com>\nDate:   2025-03-{i + 1:02d}T10:2{i}:00Z\n\n"
    f"    Fix issue #{100 + i}: handle empty pages in the paginator\n"
    for i in range(8)
)
FETCH = (
    "# Release notes\n\nSee https://docs.example.org/guide/install?version=2.3#linux and "
    "https://github.com/acme/widgets/pull/4821 for details. Published 2025-04-01. "
    "The API lives under https://api.example.org/v2/items/{id}; pagination uses `cursor`. "
) * 6
LISTING = json.dumps(
    {
        "entries": [
            {
                "path": f"/tmp/sbx-7f3a/data/report-{i}.csv",
                "size": 1024 * i,
                "modified": f"2025-05-0{i % 9 + 1}T08:00:00+00:00",
            }
            for i in range(10)
        ]
    }
)
SEARCH = json.dumps(
    {
        "results": [
            {
                "id": f"550e8400-e29b-41d4-a716-44665544{i:04d}",
                "title": f"Result {i}: weather in Paris, 21 C",
                "url": f"https://news.example.com/2025/06/{i:02d}/paris-weather",
                "score": 0.91 - i / 100,
            }
            for i in range(8)
        ],
        "took_ms": 42,
    }
)
IMAGE = "[image: image/png, 48212 base64 chars]\nChart of monthly rainfall, 2024-01 to 2024-12."
TIME = json.dumps(
    {"timezone": "Europe/Paris", "datetime": "2025-06-01T14:03:22+02:00", "dst": True}
)
RESULTS = [GIT_LOG, FETCH, LISTING, SEARCH, IMAGE, TIME]


def tool(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": schema},
    }


def realistic_row() -> dict[str, Any]:
    """The JSON-like values one exported row scrubs."""
    string = {"type": "string", "description": "A value for the call."}
    tools = [
        tool(f"srv{i}-tool_{i}", "Does one useful thing with the given input. " * 4, {"q": string})
        for i in range(6)
    ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a helpful assistant with tools. " * 5},
        {"role": "user", "content": "Summarise the last commits and the Paris forecast."},
    ]
    for i, result in enumerate(RESULTS):
        arguments = json.dumps({"q": f"query {i} for 2025-06-01"})
        messages.append(
            {
                "role": "assistant",
                "content": f"Step {i}: calling a tool.",
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {"name": f"srv{i}-tool_{i}", "arguments": arguments},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": result})
    messages.append({"role": "assistant", "content": "Eight commits fixed pagination; sunny."})
    assessment = {"completeness": {"reasoning": "All parts answered.", "score": 5}}
    metadata = {"task_id": "task_0123456789abcdef", "usage": {"prompt_tokens": 900}, "turns": 7}
    return {
        "messages": messages,
        "tools": tools,
        "question": messages[1]["content"],
        "assessment": assessment,
        "metadata": metadata,
    }


def count_strings(value: Any) -> int:
    if isinstance(value, str):
        return 1
    if isinstance(value, dict):
        return sum(count_strings(k) + count_strings(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(count_strings(v) for v in value)
    return 0


def measure(row: dict[str, Any], seconds: float, cold: bool) -> float:
    """Rows scrubbed per second, a fresh Scrubber per row as in `build_export_rows`. `cold`
    empties the detector's cache of short strings before each row (no key or role repeats
    from one row to the next: the worst case)."""
    rows, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        scrubber = Scrubber()
        cache = getattr(scrubber.detector, "find_short", None)
        if cold and cache is not None:
            cache.cache_clear()
        scrubber.scrub_value(row)
        rows += 1
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    row = realistic_row()
    strings = count_strings(row)
    chars = len(json.dumps(row))
    print(f"row: {strings} strings, {chars} JSON chars")
    for cold in (False, True):
        rows_per_s = statistics.median(
            measure(row, args.seconds, cold) for _ in range(args.repeats)
        )
        label = "cold cache" if cold else "warm cache"
        print(f"{label}: rows/s {rows_per_s:,.0f}  strings/s {rows_per_s * strings:,.0f}")
    scrubber = Scrubber()
    scrubber.scrub_value(row)
    print(f"replacements in the row: {dict(scrubber.counts)}")


if __name__ == "__main__":
    main()
