"""Every fleet server's launch, as the session layer prepares it, confines what runs in it.

For each catalog entry (stdio servers, isolated ones, and the HTTP server's `launch`) the real
launch is prepared (its sandbox view is built from the server's own program), then a shell
takes the server's place in that very sandbox and reports what it sees. It is started by a
process whose start-time environment holds fake provider keys, as toucan's would. Whether
the servers themselves still start and list their tools: test_live_fleet.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from mcp_env.fleet.catalog import load_fleet_catalog
from mcp_env.sandbox import prepare_launch, remove_sandbox
from mcp_env.specs import StdioSpec, parse_server_spec

ROOT = Path(__file__).resolve().parents[2]
FLEET_DIR = ROOT / ".fleet"
FAKE_SECRETS = {
    "OPENAI_API_KEY": "sk-test-openai-8c3e1a7f5d",
    "AWS_SECRET_ACCESS_KEY": "aws-test-secret-4f2b9d6e0a",
    "DATABASE_PASSWORD": "db-test-password-7e5c3a1b",
}
# $1..$3: host files it must not read, $4: the server's program, which it must find
PEEK = """
echo "== parent"; cat /proc/$PPID/environ
echo "== processes"; for f in /proc/[0-9]*/environ; do cat "$f"; echo; done
echo "== own"; env
echo "== files"; cat "$1" "$2" "$3"
[ -x "$4" ] && echo "== program visible"
exit 0
"""
# starts the prepared launch (JSON on stdin) with the server swapped for the shell above
RUNNER = """
import json, subprocess, sys
launch = json.load(sys.stdin)
done = subprocess.run(launch["argv"], env=launch["env"], cwd=launch["cwd"], capture_output=True,
                      text=True, timeout=120)
sys.stdout.write(done.stdout + done.stderr)
"""


def fleet_launches() -> list[tuple[str, StdioSpec]]:
    # `python3 dev.py test` installs the fleet first; without it this is a set-up error
    assert (FLEET_DIR / "venvs").is_dir(), "run `toucan fleet install` first"
    launches = []
    for raw in load_fleet_catalog(FLEET_DIR):
        spec = parse_server_spec(raw)
        launches.append((spec.name, spec if isinstance(spec, StdioSpec) else spec.launch))
    return launches


@pytest.fixture
def host_files(tmp_path) -> Iterator[list[Path]]:
    home = Path.home() / f".toucan-fleet-sandbox-{uuid.uuid4().hex}"
    home.write_text("home secret")
    store = tmp_path / "toucan.duckdb"
    duckdb.connect(str(store)).close()
    yield [home, ROOT / "pyproject.toml", store]
    home.unlink(missing_ok=True)


def peek_in_sandbox(spec: StdioSpec, files: list[Path], root: Path) -> str:
    fleet = FLEET_DIR.resolve()
    launch = prepare_launch(
        spec, sandbox_root=root, seed_dir=fleet / "seed", fleet_dir=fleet, isolation="bwrap"
    )
    try:
        program = launch.argv[launch.argv.index("--") + 1]
        argv = launch.argv[: launch.argv.index("--") + 1]
        argv += ["sh", "-c", PEEK, "peek", *map(str, files), program]
        request = json.dumps({"argv": argv, "env": launch.env, "cwd": launch.cwd})
        done = subprocess.run(
            [sys.executable, "-c", RUNNER],
            input=request,
            env={**os.environ, **FAKE_SECRETS},
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        return done.stdout
    finally:
        remove_sandbox(launch.sandbox_dir)


@pytest.mark.parametrize(("name", "spec"), fleet_launches(), ids=lambda v: getattr(v, "name", v))
def test_a_fleet_server_sandbox_shows_no_secret_and_no_host_file(name, spec, host_files, tmp_path):
    seen = peek_in_sandbox(spec, host_files, tmp_path)
    assert "== program visible" in seen, seen[-2000:]
    assert not [key for key, value in FAKE_SECRETS.items() if value in seen]
    assert "home secret" not in seen and "[project]" not in seen
    assert seen.count("No such file or directory") >= 3  # each host file, not only one
