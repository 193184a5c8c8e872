"""Done-when with the embedded model: a `local`-profile trajectory, exported, names
SmolLM2-135M-Instruct (what the llama server loaded) as the model that wrote it, in its row and
in the dataset card, whatever the teacher deployment is called in the config."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.runner import run_stage_async
from tests.export.seeding import export_to
from tests.trajectories.conftest import quiet_litellm_typeddict_warning
from tests.trajectories.helpers import fleet_dir, kept_task, seed_store, server_row, tiny_spec
from toucan.config import load_settings
from toucan.ids import make_id
from toucan.records import Event, Trajectory, TrajectoryRating
from toucan.store import Store

__all__ = ["quiet_litellm_typeddict_warning"]
# one trajectory of SmolLM2-135M on a shared 2-core box: a few calls of ~10-40 s each
pytestmark = [pytest.mark.model, pytest.mark.timeout(900)]
EMBEDDED = "SmolLM2-135M-Instruct"


def test_a_local_profile_export_names_the_embedded_model_in_its_rows_and_card(
    tmp_path: Path,
) -> None:
    pytest.importorskip("llama_cpp")
    server = server_row(tiny_spec(tmp_path / "calls.log"))
    store = Store(tmp_path / "local.duckdb")
    task = kept_task("Please echo the word 'toucan' back to me.", [server], [(server, "echo")])
    seed_store(store, [server], [task])
    settings = load_settings(
        None,
        profile="local",
        overrides={"store": str(store.path), "mcp": {"fleet_dir": str(fleet_dir())}},
    )

    # the runner starts the embedded model server around the trajectory and stops it after
    asyncio.run(run_stage_async("trajectories", settings, store, limit=1))
    [trajectory] = store.select(Trajectory)
    # the judge's verdict is not what is under test: the row is kept by hand
    kept = TrajectoryRating(
        rating_id=make_id("jrate", trajectory.trajectory_id),
        trajectory_id=trajectory.trajectory_id,
        judge="GPT-4o-mini",
        keep=True,
    )
    store.insert([kept])
    summary = export_to(store, settings, tmp_path / "dataset", ["parquet"])

    assert trajectory.status == "ok", (trajectory.reason, trajectory.metadata.get("error"))
    assert trajectory.teacher in {d.name for d in settings.models.teachers}
    assert (trajectory.served_by, trajectory.served_by_embedded) == (EMBEDDED, True)
    calls = store.select(Event, "kind = 'llm_call'")
    assert calls and {e.served_by for e in calls} == {EMBEDDED}
    [row] = pq.read_table(tmp_path / "dataset" / "data").to_pylist()
    metadata = json.loads(row["metadata"])
    assert metadata["model"] == EMBEDDED and metadata["served_by_embedded_model"] is True
    assert metadata["provenance"]["teacher"]["served_by"] == EMBEDDED
    assert summary.served.embedded_models == [EMBEDDED]
    card = (tmp_path / "dataset" / "README.md").read_text()
    assert f"Produced by the embedded local model `{EMBEDDED}`" in card
    assert f"| teacher | {EMBEDDED} | 1 |" in card
