"""Catalog readers: our YAML/JSON/JSONL formats and the full Smithery dump."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mcp_env.catalog import load_catalog, parse_usage_count
from mcp_env.specs import HttpSpec, StdioSpec

SMITHERY = Path(__file__).resolve().parents[2] / "catalogs" / "smithery" / "servers.jsonl"


def test_yaml_catalog_with_bad_entries(tmp_path):
    path = tmp_path / "servers.yaml"
    path.write_text(
        """
servers:
  - {name: time, transport: stdio, command: mcp-server-time, args: ["--local-timezone", "UTC"]}
  - {name: remote, url: "https://example.org/mcp"}
  - {name: no-command, transport: stdio}
  - {name: time, command: other}
  - {name: typo, command: x, comand: y}
  - just a string
"""
    )
    loaded = load_catalog(path)
    assert [type(spec) for spec in loaded.specs] == [StdioSpec, HttpSpec]
    assert [(r.index, r.name, r.reason) for r in loaded.rejections] == [
        (2, "no-command", "missing_command"),
        (3, "time", "duplicate_name"),
        (4, "typo", "invalid_spec"),
        (5, None, "invalid_spec"),
    ]
    assert "comand" in loaded.rejections[2].detail
    assert loaded.specs[1].transport_declared is False  # a bare url: our guess, not theirs


def test_a_declared_transport_is_marked_declared_and_smithery_urls_are_not(tmp_path):
    path = tmp_path / "servers.yaml"
    path.write_text(
        """
servers:
  - {name: a, transport: streamable-http, url: "https://example.org/mcp"}
  - {name: b, transport: sse, url: "https://example.org/sse"}
"""
    )
    assert [spec.transport_declared for spec in load_catalog(path).specs] == [True, True]
    sample = Path(__file__).resolve().parents[1] / "data" / "smithery_sample.jsonl"
    smithery = load_catalog(sample).specs
    assert smithery and all(spec.transport_declared is False for spec in smithery)


def test_declared_annotations_keep_protocol_names(tmp_path):
    path = tmp_path / "servers.yaml"
    tool = {"name": "t", "annotations": {"read_only_hint": True, "openWorldHint": False}}
    path.write_text(
        json.dumps({"servers": [{"name": "a", "url": "http://x/mcp", "tools": [tool]}]})
    )
    [spec] = load_catalog(path).specs
    assert spec.tools[0].annotations == {"readOnlyHint": True, "openWorldHint": False}


def test_files_that_do_not_parse_are_one_rejection(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("servers: [unclosed\n  - : :\n")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"servers": [')
    not_a_list = tmp_path / "odd.yaml"
    not_a_list.write_text("servers: 3\n")
    assert [r.reason for r in load_catalog(bad_yaml).rejections] == ["invalid_yaml"]
    assert [r.reason for r in load_catalog(bad_json).rejections] == ["invalid_json"]
    assert [r.reason for r in load_catalog(not_a_list).rejections] == ["missing_servers"]
    assert [r.reason for r in load_catalog(tmp_path / "absent.yaml").rejections] == [
        "unreadable_file"
    ]


def test_jsonl_with_a_broken_line_keeps_the_others(tmp_path):
    path = tmp_path / "servers.jsonl"
    lines = [
        json.dumps({"name": "a", "command": "a-server"}),
        "{not json",
        json.dumps({"name": "b", "transport": "sse", "url": "http://127.0.0.1:1/sse"}),
        json.dumps({"name": "c", "transport": "sse"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    loaded = load_catalog(path)
    assert [spec.name for spec in loaded.specs] == ["a", "b"]
    assert [(r.index, r.reason) for r in loaded.rejections] == [
        (2, "invalid_json"),
        (4, "missing_url"),
    ]


def test_full_smithery_file_is_accounted_for():
    started = time.perf_counter()
    loaded = load_catalog(SMITHERY)
    elapsed = time.perf_counter() - started
    line_count = sum(1 for line in SMITHERY.read_text().splitlines() if line.strip())
    assert line_count == 1699
    assert len(loaded.specs) + len(loaded.rejections) == line_count
    assert len({spec.server_id for spec in loaded.specs}) == len(loaded.specs)
    assert elapsed < 15  # about 1 s on an idle machine
    exa = next(spec for spec in loaded.specs if spec.name == "exa")
    assert exa.title == "Exa Search" and exa.source == "smithery"
    assert exa.url.startswith("https://server.smithery.ai/exa/mcp")
    assert exa.domain == "Web Search & Research"
    assert exa.usage_count == 73272 and exa.featured and exa.license == "MIT"
    assert exa.repository == "https://github.com/exa-labs/exa-mcp-server"
    assert len(exa.tools) == 8 and exa.missing_config() == []
    assert any(field.env == "SMITHERY_API_KEY" for field in exa.config)
    needing = [spec for spec in loaded.specs if spec.missing_config()]
    assert 500 < len(needing) < len(loaded.specs)
    custom = [spec for spec in loaded.specs if spec.domain is None]
    assert custom and all(spec.secondary_domains for spec in custom)
    assert {r.reason for r in loaded.rejections} <= {"missing_url", "invalid_smithery_entry"}


def test_usage_counts_parse():
    assert parse_usage_count("73,272") == 73272
    assert parse_usage_count("Not available") == 0
    assert parse_usage_count(12) == 12
