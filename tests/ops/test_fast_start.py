"""Fast start: the read-only commands answer from the store without loading Prefect, LiteLLM,
plotly or the flows, and a model call on the direct transport never imports LiteLLM.

Each command runs in a fresh interpreter (what loaded in one process says nothing of another),
on a store seeded with every kind of row and a finished run with events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.bench_start import CLIENT
from tests.export.seeding import seed_pipeline
from tests.fake_llm import FakeLlm
from tests.fresh_python import run_python
from tests.ops.test_status import seeded_events
from toucan.records import Run, RunProgress
from toucan.store import Store

HEAVY = ("prefect", "litellm", "plotly", "flows")
# run the command, then report which heavy packages the process loaded (in any case)
PROBE = """
import json, sys
from cli import app
code = 0
try:
    app(sys.argv[2:], standalone_mode=False)
except SystemExit as stop:
    code = stop.code or 0
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[1])))
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}) + "\\n")
"""


def loaded_by(args: list[str]) -> dict[str, object]:
    done = run_python(PROBE, json.dumps(HEAVY), *args)
    report = done.stderr.rsplit("PROBE ", 1)
    assert len(report) == 2, done.stderr[-3000:]
    return json.loads(report[1])


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = Store(tmp_path_factory.mktemp("fast") / "toucan.duckdb")
    seed_pipeline(store)
    store.insert(seeded_events())
    store.upsert(
        [
            Run(run_id="run-a", stage="trajectories", status="completed"),
            RunProgress(run_id="run-a", stage="trajectories", planned=8, finished=8, failed=1),
        ]
    )
    return store.path


@pytest.mark.parametrize(
    "command",
    [
        ["servers", "--json"],
        ["tools", "--json"],
        ["status", "--json"],
        ["status"],
        ["show", "traj_orig", "--json"],
        ["config"],
    ],
    ids=lambda command: " ".join(command),
)
def test_a_read_only_command_loads_no_prefect_litellm_plotly_or_flows(
    demo_store: Path, command: list[str]
) -> None:
    store = [] if command == ["config"] else ["--store", str(demo_store)]
    probe = loaded_by([*command, *store])
    assert probe == {"code": 0, "heavy": []}


def test_the_probe_sees_prefect_and_the_flows_when_a_command_needs_them(tmp_path: Path) -> None:
    config = tmp_path / "toucan.yaml"  # a stage budget: `config` checks it against the registry
    config.write_text("budget:\n  per_stage:\n    synthesize: 1.0\n", encoding="utf-8")
    probe = loaded_by(["config", "--config", str(config)])
    assert probe["code"] == 0 and {"prefect", "flows"} <= set(probe["heavy"])  # type: ignore[arg-type]


def test_a_model_call_on_the_direct_transport_never_imports_litellm(tmp_path: Path) -> None:
    with FakeLlm() as fake:
        deployment = {"name": "d", "model": "openai/d", "api_base": fake.base_url}
        config = tmp_path / "toucan.yaml"
        config.write_text(
            json.dumps(
                {
                    "profile": "cloud",
                    "models": {
                        "generators": [deployment],
                        "teachers": [deployment],
                        "judge": [deployment],
                    },
                }
            )
        )
        loaded = "{m.split('.')[0] for m in sys.modules} & {'litellm', 'prefect'}"
        check = f"{CLIENT}\nprint(sorted({loaded}))"
        done = run_python(check, str(config))
        assert done.returncode == 0, done.stderr[-3000:]
        assert fake.calls.total == 1
    assert done.stdout.strip().splitlines()[-1] == "[]"
