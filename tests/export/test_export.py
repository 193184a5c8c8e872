"""Export: Toucan-1.5M layout, formats, scrubbing, validation and bad input, on real stores."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow.parquet as pq
import pytest

from tasks.export import EXPORT_COLUMNS, SUBSETS, ExportRow
from tasks.export_formats import FORMATS
from tasks.scrub import find_secrets
from tests.export.seeding import LEAKS, export_to, seed_pipeline
from toucan.config import load_settings
from toucan.errors import ConfigError
from toucan.ids import export_uuid
from toucan.store import Store

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def settings():
    return load_settings(profile="local")


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Store, dict[str, str]]:
    store = Store(tmp_path / "toucan.duckdb")
    return store, seed_pipeline(store)


def read_parquet_rows(out: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted((out / "data").glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def test_export_writes_every_subset_in_the_toucan_layout(seeded, settings, tmp_path):
    store, ids = seeded
    out = tmp_path / "out"
    summary = export_to(store, settings, out, ["parquet", "jsonl", "openai", "sharegpt"])
    rows = read_parquet_rows(out)
    assert summary.rows == len(rows) == 4
    assert {r["subset_name"] for r in rows} == set(SUBSETS)
    assert all(list(r) == list(EXPORT_COLUMNS) for r in rows)
    assert all(isinstance(v, str) for r in rows for v in r.values())
    expected = {
        export_uuid(ids[k]) for k in ("original", "irrelevant", "diversified", "multi_turn")
    }
    assert {r["uuid"] for r in rows} == expected
    assert summary.excluded == {"invalid_tool_arguments": 1}  # the rejected one is not a candidate
    by_subset = {r["subset_name"]: r for r in rows}
    multi = json.loads(by_subset["multi-turn"]["metadata"])
    assert (multi["requested_turns"], multi["completed_turns"]) == (3, 2)
    assert by_subset["irrelevant"]["target_tools"] == "get_forecast"
    question_scores = json.loads(by_subset["irrelevant"]["question_quality_assessment"])
    assert question_scores["question_quality"]["score"] == 4  # the parent task's rating
    response = json.loads(by_subset["single-turn-original"]["response_quality_assessment"])
    assert response["completeness"]["score"] == 5
    assert response["desired_tools_used_percentage"] == 1.0
    jsonl = [json.loads(line) for p in (out / "data").glob("*.jsonl") for line in p.open()]
    assert sorted(r["uuid"] for r in jsonl) == sorted(r["uuid"] for r in rows)
    card = (out / "README.md").read_text()
    for needle in (
        "single-turn-diversify",
        "weather",
        "MIT",
        "Apache-2.0",
        "Kimi-K2-Turbo",
        "invalid_tool_arguments",
        "openai_key",
        "min_completeness",
    ):
        assert needle in card


def test_the_export_loads_with_hugging_face_datasets(seeded, settings, tmp_path):
    from datasets import load_dataset

    store, _ = seeded
    export_to(store, settings, tmp_path / "out", ["parquet"])
    files = [str(p) for p in (tmp_path / "out" / "data").glob("*.parquet")]
    dataset = load_dataset(
        "parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf")
    )
    assert dataset.num_rows == 4
    assert set(dataset.column_names) == set(EXPORT_COLUMNS)
    assert set(dataset["subset_name"]) == set(SUBSETS)


def test_every_exported_tool_call_validates_against_its_tool_schema(seeded, settings, tmp_path):
    store, _ = seeded
    export_to(store, settings, tmp_path / "out", ["parquet"])
    checked = 0
    for row in read_parquet_rows(tmp_path / "out"):
        schemas = {
            t["function"]["name"]: t["function"]["parameters"]
            for t in json.loads(row["available_tools"])
        }
        for message in json.loads(row["messages"]):
            for call in message.get("tool_calls") or []:
                schema = schemas[call["function"]["name"]]
                jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
                checked += 1
    assert checked == 4  # original, diversified, and two in the multi-turn row


def escaped_forms(text: str) -> set[str]:
    """`text` as a file may hold it: raw, JSON-escaped once (a string in a JSONL line) or twice
    (a tool result that is JSON text, inside a JSON string)."""
    once = json.dumps(text)[1:-1]
    return {text, once, json.dumps(once)[1:-1]}


def exported_texts(out: Path) -> dict[str, str]:
    """Every file the export wrote, by relative path, as text (a parquet file: its cells)."""
    texts = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            rows = pq.read_table(path).to_pylist()
            text = "\n".join(value for row in rows for value in row.values())
        else:
            text = path.read_text(encoding="utf-8")
        texts[str(path.relative_to(out))] = text
    return texts


def json_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *json_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in json_strings(v)]
    return []


def test_one_secret_of_every_kind_is_removed_from_every_file_and_counted_by_kind(
    seeded, settings, tmp_path
):
    store, _ = seeded
    out = tmp_path / "out"
    summary = export_to(store, settings, out, list(FORMATS))
    texts = exported_texts(out)
    assert {name.split("/")[0] for name in texts} >= {"data", "openai", "sharegpt"}
    assert {Path(name).suffix for name in texts} >= {".parquet", ".jsonl", ".md", ".json"}
    needles = {form for leak in LEAKS for needle in leak.needles for form in escaped_forms(needle)}
    for name, text in texts.items():
        assert not [needle for needle in needles if needle in text], name
        assert str(tmp_path) not in text, name
    for column_value in (v for row in read_parquet_rows(out) for v in row.values()):
        assert find_secrets(column_value) == []
    kinds = {leak.kind for leak in LEAKS}
    assert {kind for kind, n in summary.scrubbed.items() if n} == kinds
    assert summary.scrubbed_rows == dict.fromkeys(kinds, 1)
    assert summary.rows_scrubbed == 1
    card = texts["README.md"]
    assert all(kind in card for kind in kinds)
    shipped = json.loads(texts["export_summary.json"])
    assert shipped["out_dir"] == "out" and shipped["scrubbed_rows"] == summary.scrubbed_rows
    absolute = re.compile(r"^(?:/|[A-Za-z]:\\|\\\\)")
    assert not [s for s in json_strings(shipped) if absolute.match(s)]


def write_questions(rows: list[ExportRow], out_dir: Path, shard_rows: int) -> list[Path]:
    """A format of a few lines: one question per line."""
    path = out_dir / "questions.txt"
    path.write_text("".join(f"{row.question}\n" for row in rows), encoding="utf-8")
    return [path]


def test_a_format_added_by_one_registry_line_is_written_and_no_name_falls_through(
    seeded, settings, tmp_path, monkeypatch
):
    store, _ = seeded
    monkeypatch.setitem(FORMATS, "questions", write_questions)
    summary = export_to(store, settings, tmp_path / "out", ["questions"])
    assert "questions.txt" in summary.files
    assert len((tmp_path / "out" / "questions.txt").read_text().splitlines()) == summary.rows == 4
    with pytest.raises(ConfigError) as raised:  # never sent to ShareGPT
        export_to(store, settings, tmp_path / "other", ["shargpt"], overwrite=True)
    assert raised.value.reason == "unknown_export_format"
    assert not (tmp_path / "other" / "shargpt").exists()


def test_an_empty_store_gives_a_clear_message_and_a_valid_empty_export(settings, tmp_path):
    out = tmp_path / "out"
    summary = export_to(Store(tmp_path / "empty.duckdb"), settings, out, ["parquet", "openai"])
    assert summary.rows == 0
    assert "No kept trajectories" in summary.message
    tables = [pq.read_table(p) for p in (out / "data").glob("*.parquet")]
    assert len(tables) == 1 and tables[0].num_rows == 0
    assert tables[0].column_names == list(EXPORT_COLUMNS)
    assert [p.read_text() for p in (out / "openai").glob("*.jsonl")] == [""]
    assert "No kept trajectories" in (out / "README.md").read_text()


def test_a_trajectory_whose_messages_are_not_valid_json_is_excluded(seeded, settings, tmp_path):
    store, ids = seeded
    # DuckDB's JSON type refuses malformed text, so broken messages arrive double-encoded.
    store.execute(
        "UPDATE trajectories SET messages = ? WHERE trajectory_id = ?",
        [json.dumps('[{"role": "user", "content": "trunc'), ids["diversified"]],
    )
    store.execute(
        "UPDATE trajectories SET messages = ? WHERE trajectory_id = ?",
        ['{"role": "assistant"}', ids["original"]],
    )
    summary = export_to(store, settings, tmp_path / "out", ["parquet"])
    assert summary.excluded["bad_messages_json"] == 2
    assert {r["subset_name"] for r in read_parquet_rows(tmp_path / "out")} == {
        "irrelevant",
        "multi-turn",
    }


def test_an_existing_output_folder_is_refused_unless_overwrite(seeded, settings, tmp_path):
    store, _ = seeded
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_to(store, settings, out, ["parquet"])
    assert (out / "keep.txt").read_text() == "mine"
    summary = export_to(store, settings, out, ["parquet"], overwrite=True)
    assert summary.rows == 4 and not (out / "keep.txt").exists()


def test_the_paper_mix_is_scaled_to_what_exists_and_deterministic(seeded, settings, tmp_path):
    store, _ = seeded
    first = export_to(store, settings, tmp_path / "a", ["parquet"], mix="paper")
    second = export_to(store, settings, tmp_path / "b", ["parquet"], mix="paper")
    # one row per subset; irrelevant (40) is the scarcest per unit of weight: 1/40 per unit
    assert first.mix_plan == {
        "single-turn-original": 1,
        "irrelevant": 1,
        "single-turn-diversify": 0,
        "multi-turn": 1,
    }
    assert read_parquet_rows(tmp_path / "a") == read_parquet_rows(tmp_path / "b")
    assert first.rows == second.rows == 3
