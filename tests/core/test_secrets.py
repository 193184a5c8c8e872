"""Secrets stay in toucan's own memory: not in its start-time environment as /proc shows it,
not in the environment of the processes it starts for itself (Prefect's API server)."""

from __future__ import annotations

import json
import os

from tests.fresh_python import ROOT, run_python
from toucan.secrets import REGISTRY_PREFIXES, is_secret_name, without_secrets

FAKE_SECRETS = {"OPENAI_API_KEY": "sk-test-core-3e5a7c9b", "PGPASSWORD": "pg-test-1b3d5f7a"}
# a python child with the fake secrets in its start-time environment reports what /proc shows
BLANK_AND_REPORT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from toucan.secrets import blank_start_environment
before = open("/proc/self/environ", "rb").read().decode()
names = blank_start_environment()
after = open("/proc/self/environ", "rb").read().decode()
print(json.dumps({"names": sorted(names), "before": before, "after": after,
                  "kept": os.environ["OPENAI_API_KEY"], "path": os.environ.get("PATH")}))
"""
START_API_AND_REPORT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from cli.prefect_env import configure_quiet_prefect
configure_quiet_prefect()
from flows.prefect_api import start_ephemeral_api
start_ephemeral_api()
from prefect.server.api.server import SubprocessASGIServer
server = SubprocessASGIServer()
environ = open(f"/proc/{server.server_process.pid}/environ", "rb").read().decode()
server.stop()
print(json.dumps({"server_environ": environ}))
"""


def run_with_secrets(code: str, **extra_env: str) -> dict:
    env = {**os.environ, **FAKE_SECRETS, **extra_env}
    env.pop("PREFECT_API_URL", None)
    done = run_python(code, str(ROOT), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_secret_names_are_recognised():
    assert all(is_secret_name(n) for n in ("OPENAI_API_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD"))
    assert not any(is_secret_name(n) for n in ("PATH", "HOME", "LANG", "PREFECT_API_URL"))
    environ = {"PATH": "/usr/bin", "HF_TOKEN": "hf_x", "UV_INDEX_PRIVATE_PASSWORD": "p"}
    assert without_secrets(environ) == {"PATH": "/usr/bin"}
    installer = without_secrets(environ, keep_prefixes=REGISTRY_PREFIXES)
    assert installer == {"PATH": "/usr/bin", "UV_INDEX_PRIVATE_PASSWORD": "p"}


def test_the_start_time_environment_no_longer_shows_secrets_but_the_process_keeps_them():
    report = run_with_secrets(BLANK_AND_REPORT)
    assert all(value in report["before"] for value in FAKE_SECRETS.values())
    assert not any(value in report["after"] for value in FAKE_SECRETS.values())
    assert set(FAKE_SECRETS) <= set(report["names"])
    assert report["kept"] == FAKE_SECRETS["OPENAI_API_KEY"]  # toucan still reads its key
    assert f"PATH={report['path']}" in report["after"]  # the rest is left alone


def test_prefects_ephemeral_api_server_starts_without_our_secrets(tmp_path):
    report = run_with_secrets(START_API_AND_REPORT, PREFECT_HOME=str(tmp_path))
    assert "PREFECT__SERVER_EPHEMERAL=1" in report["server_environ"]
    assert not any(value in report["server_environ"] for value in FAKE_SECRETS.values())
