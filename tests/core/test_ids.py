"""Ids are hashes of canonical JSON; the fast encoder must write what the json module wrote,
or every id (and every cache key) of an existing store would change."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from toucan.ids import canonical_json, make_id

CATALOG = Path(__file__).resolve().parents[2] / "catalogs" / "smithery" / "servers.jsonl"


def reference(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1, 2, (3, 4)], "c": {"z": None, "y": True}},
        {1: "x", 2: "y"},
        "héllo ✓ — 東京",
        [0.1, -0.0, 1e16, 1.5e300, 123456789.123, 2**63 - 1],
        datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        {"when": datetime.date(2025, 2, 1), "big": 2**80},  # past 64 bits: the fallback
    ],
)
def test_canonical_json_matches_the_json_module(value: Any) -> None:
    assert canonical_json(value) == reference(value)


def test_canonical_json_matches_the_json_module_on_every_smithery_record() -> None:
    records = [json.loads(line) for line in CATALOG.read_text(encoding="utf-8").splitlines()]
    assert len(records) > 1000
    assert [r for r in records if canonical_json(r) != reference(r)] == []


def test_ids_are_stable_and_tell_inputs_apart() -> None:
    assert make_id("task", "a", 1) == make_id("task", "a", 1)
    assert make_id("task", "a", 1) != make_id("task", "a", 2)
    assert make_id("task", "a") != make_id("tool", "a")
