"""`toucan export` through the CLI and the Prefect flow, on a seeded real store."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli import app
from tests.export.seeding import seed_pipeline
from toucan.store import Store


def test_the_cli_exports_chat_formats_through_the_prefect_flow(prefect_harness, tmp_path):
    store = Store(tmp_path / "toucan.duckdb")
    seed_pipeline(store)
    out = tmp_path / "out"
    args = [
        "export",
        "--out",
        str(out),
        "--store",
        str(store.path),
        "--profile",
        "local",
        "--format",
        "parquet",
        "--format",
        "openai",
        "--format",
        "sharegpt",
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 4
    openai_rows = [json.loads(x) for p in (out / "openai").glob("*.jsonl") for x in p.open()]
    sharegpt_rows = [json.loads(x) for p in (out / "sharegpt").glob("*.jsonl") for x in p.open()]
    assert len(openai_rows) == len(sharegpt_rows) == 4
    for row in openai_rows:
        assert row["loss_mask"] == [m["role"] == "assistant" for m in row["messages"]]
        assert all(m.get("weight") == 1 for m in row["messages"] if m["role"] == "assistant")
        assert row["tools"]
    multi = next(r for r in sharegpt_rows if r["subset_name"] == "multi-turn")
    turns = [t["from"] for t in multi["conversations"]]
    assert turns[0] == "system" and "<tools>" in multi["conversations"][0]["value"]
    assert turns.count("human") == 2 and turns.count("tool") == 2
    assert multi["loss_mask"] == [t == "gpt" for t in turns]
    calls = [
        t for t in multi["conversations"] if t["from"] == "gpt" and "<tool_call>" in t["value"]
    ]
    assert len(calls) == 2
    assert any("<tool_response>" in t["value"] for t in multi["conversations"])

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2
    assert "--overwrite" in again.output
    replaced = CliRunner().invoke(app, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
