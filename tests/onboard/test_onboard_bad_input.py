"""Bad servers and bad catalog entries each get a clear reason on their own row; the rest are
onboarded, and no server process survives the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "servers" / "tiny_server.py"


def tiny(name: str, mode: str, **extra: object) -> dict[str, object]:
    return {"name": name, "command": sys.executable, "args": [str(TINY), "--mode", mode], **extra}


@pytest.mark.slow
def test_each_bad_server_gets_its_own_reason_while_the_good_ones_are_onboarded(
    tmp_path: Path,
) -> None:
    catalog = {
        "servers": [
            tiny("good", "good", probe={"tool": "echo", "arguments": {"text": "hi"}}),
            tiny("second-good", "good", domain="Development Tools"),
            tiny("crashes-at-start", "crash"),
            tiny("hangs-on-initialize", "hang"),
            tiny("malformed-tool-list", "malformed"),
            tiny("tool-call-raises", "good", probe={"tool": "boom", "arguments": {}}),
            {"name": "no-command", "transport": "stdio"},
            {
                "name": "needs-key",
                "command": sys.executable,
                "args": [str(TINY)],
                "config": [{"name": "api_key", "required": True, "secret": True}],
            },
        ]
    }
    catalog_path = tmp_path / "catalog.yaml"
    catalog_path.write_text(yaml.safe_dump(catalog))
    config_path = tmp_path / "toucan.yaml"
    config_path.write_text(
        yaml.safe_dump({"mcp": {"connect_timeout_s": 30}, "onboard": {"retries": 0}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCAN_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "onboard",
            "--catalog",
            str(catalog_path),
            "--config",
            str(config_path),
            "--store",
            str(tmp_path / "s.duckdb"),
            "--json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {s["name"]: s for s in json.loads(result.stdout)["servers"]}
    assert rows["good"]["status"] == "ok" and rows["good"]["tools"] >= 5, rows["good"]
    assert rows["second-good"]["status"] == "ok", rows["second-good"]
    assert rows["second-good"]["domain"] == "Development Tools"
    expected_rejections = {
        "crashes-at-start": {"crashed_at_start", "server_start_failed"},
        "hangs-on-initialize": {"initialize_timeout"},
        "malformed-tool-list": {"no_usable_tools"},  # its one tool has no name
        "tool-call-raises": {"probe_failed", "tool_error"},
        "needs-key": {"needs_credentials"},
    }
    for name, reasons in expected_rejections.items():
        assert rows[name]["status"] == "rejected", rows[name]
        assert rows[name]["reason"] in reasons, (rows[name], rows[name]["detail"])
    [no_command] = [r for r in rows.values() if "no-command" in str(r["name"])]
    assert (no_command["status"], no_command["reason"]) == ("rejected", "missing_command")
    survivors = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(TINY) in " ".join(p.info.get("cmdline") or [])
    ]
    assert survivors == []
