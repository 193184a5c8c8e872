"""`toucan status` and the pure throughput functions, on events seeded into a real store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from typer.testing import CliRunner

from cli import app
from flows.run_context import stage_run
from toucan.config import load_settings
from toucan.records import Event, Run
from toucan.status import (
    build_run_status,
    events_frame,
    list_runs,
    process_alive,
    process_started_at,
    read_run_status,
    summarize_models,
    summarize_servers,
    this_host,
)
from toucan.store import Store

T0 = datetime(2026, 1, 1, 12, 0, 0)


def _event(n: int, **fields: object) -> Event:
    base: dict[str, object] = {
        "event_id": f"e{n}",
        "run_id": "run-a",
        "stage": "trajectories",
        "kind": "item",
        "status": "ok",
    }
    base.update(fields)
    return Event.model_validate(base)


def seeded_events() -> list[Event]:
    """alpha: 6 items over 3 minutes (one failed); beta: 2 items over 1 minute; model calls."""
    events = []
    for i in range(6):
        start = T0 + timedelta(seconds=36 * i)
        events.append(
            _event(
                i,
                server="alpha",
                item_id=f"a{i}",
                started_at=start,
                ended_at=start + timedelta(seconds=i * 1.0 + 1),
                latency_ms=(i + 1) * 1000.0,
                status="error" if i == 5 else "ok",
                error_class="ToolTimeout" if i == 5 else None,
            )
        )
    # alpha's last item ends at 180 + 6 = 186 s after T0? no: i=5 starts at 180 s, ends 186 s.
    for i in range(2):
        start = T0 + timedelta(seconds=30 * i)
        events.append(
            _event(
                10 + i,
                server="beta",
                item_id=f"b{i}",
                started_at=start,
                ended_at=start + timedelta(seconds=30),
                latency_ms=30_000.0,
                status="rejected",
            )
        )
    for i in range(3):
        events.append(
            _event(
                20 + i,
                kind="tool_call",
                server="alpha",
                started_at=T0,
                ended_at=T0,
                status="error" if i == 0 else "ok",
                error_class="ToolError" if i == 0 else None,
            )
        )
    for i in range(4):
        start = T0 + timedelta(seconds=15 * i)
        limited = i == 3
        events.append(
            _event(
                30 + i,
                kind="llm_call",
                model="GPT-4o-mini",
                started_at=start,
                ended_at=start + timedelta(seconds=15),
                tokens_in=100,
                tokens_out=50,
                cost_usd=0.01,
                status="rate_limited" if limited else "ok",
                error_class="RateLimited" if limited else None,
            )
        )
    events.append(
        _event(40, kind="llm_call", model="Qwen2-72B-Instruct", started_at=T0, ended_at=T0)
    )
    return events


def test_items_per_minute_per_server_is_finished_items_over_the_stage_wall_time() -> None:
    stats = {s.server: s for s in summarize_servers(events_frame(seeded_events()), wall_s=240)}
    alpha, beta = stats["alpha"], stats["beta"]
    assert (alpha.items_done, alpha.items_failed) == (5, 1)
    assert alpha.items_per_min == 1.5  # 6 items over the 4 minutes of the stage
    assert (beta.items_done, beta.items_failed) == (2, 0)
    assert beta.items_per_min == 0.5
    # without a wall time, the events' own span (first start to last end: 186 s)
    spanned = {s.server: s for s in summarize_servers(events_frame(seeded_events()))}
    assert spanned["alpha"].items_per_min == round(6 / (186 / 60), 3)
    assert alpha.p50_ms == 3500.0
    assert alpha.p95_ms == 5750.0
    assert (alpha.tool_calls, alpha.tool_errors) == (3, 1)
    assert alpha.error_classes == {"ToolError": 1, "ToolTimeout": 1}


def test_per_model_tokens_cost_and_429s_come_from_llm_calls() -> None:
    stats = {m.model: m for m in summarize_models(events_frame(seeded_events()), wall_s=60)}
    judge = stats["GPT-4o-mini"]
    assert (judge.calls, judge.failed, judge.rate_limited) == (4, 1, 1)
    assert judge.tokens_per_min == 600.0  # 600 tokens over 60 s
    assert judge.cost_usd == 0.04
    unclocked = summarize_models(events_frame(seeded_events()), wall_s=0)
    assert all(m.tokens_per_min is None for m in unclocked)  # no wall time yet


def test_an_empty_run_has_no_rows_and_no_progress() -> None:
    run = Run(run_id="r", stage="onboard", started_at=T0, summary={"planned": 4})
    status = build_run_status(run, events_frame([]), now=T0 + timedelta(seconds=5))
    assert status.servers == [] and status.models == []
    assert (status.progress.finished, status.progress.fraction) == (0, 0.0)
    assert status.elapsed_s == 5.0


def _seed_store(path: Path) -> Store:
    store = Store(path)
    store.insert(seeded_events())
    store.upsert(
        [
            Run(
                run_id="run-a",
                stage="trajectories",
                status="completed",
                started_at=T0,
                finished_at=T0 + timedelta(minutes=4),
                summary={"planned": 8},
            ),
            Run(
                run_id="run-old",
                stage="onboard",
                status="completed",
                started_at=T0 - timedelta(days=1),
            ),
        ]
    )
    return store


def test_status_json_reports_items_per_minute_matching_the_events(tmp_path: Path) -> None:
    store = _seed_store(tmp_path / "s.duckdb")
    result = CliRunner().invoke(app, ["status", "--store", str(store.path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["run_id"] == "run-a"  # the latest run
    wall_s = 240  # run-a ran 4 minutes
    frame = events_frame(seeded_events())
    expected = {s.server: s.items_per_min for s in summarize_servers(frame, wall_s)}
    assert {s["server"]: s["items_per_min"] for s in payload["servers"]} == expected
    assert payload["progress"] == {"done": 7, "failed": 1, "planned": 8, "fraction": 1.0}
    assert payload["models"][0]["rate_limited"] == 1


def test_status_of_a_past_run_by_id_and_of_an_unknown_run(tmp_path: Path) -> None:
    store = _seed_store(tmp_path / "s.duckdb")
    runner = CliRunner()
    old = runner.invoke(app, ["status", "--store", str(store.path), "--run", "run-old", "--json"])
    assert old.exit_code == 0
    assert json.loads(old.stdout)["stage"] == "onboard"
    missing = runner.invoke(app, ["status", "--store", str(store.path), "--run", "nope"])
    assert missing.exit_code == 2
    assert "no run 'nope'" in missing.output


def test_status_watch_on_a_finished_run_renders_once_and_returns(tmp_path: Path) -> None:
    store = _seed_store(tmp_path / "s.duckdb")
    result = CliRunner().invoke(app, ["status", "--store", str(store.path), "--watch"])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "GPT-4o-mini" in result.output


def dead_process() -> tuple[int, datetime]:
    """The pid and start time of a process that was alive and has been killed (and reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = process_started_at(child.pid)
    child.kill()
    child.wait(timeout=60)
    assert started is not None and not psutil.pid_exists(child.pid)
    return child.pid, started


def running_row(run_id: str, pid: int, process_start: datetime | None, **extra: object) -> Run:
    return Run(
        run_id=run_id,
        stage="synthesize",
        started_at=extra.pop("started_at", T0),  # type: ignore[arg-type]
        pid=pid,
        host=extra.pop("host", this_host()),  # type: ignore[arg-type]
        process_started_at=process_start,
        **extra,  # type: ignore[arg-type]
    )


def test_a_running_run_whose_process_is_gone_is_crashed_with_its_clock_stopped(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.duckdb")
    pid, started = dead_process()
    store.upsert([running_row("dead", pid, started)])
    last = T0 + timedelta(seconds=42)
    store.insert([_event(1, run_id="dead", started_at=T0, ended_at=last)])
    result = CliRunner().invoke(app, ["status", "--store", str(store.path), "--json"])
    payload = json.loads(result.stdout)
    assert (payload["status"], payload["elapsed_s"]) == ("crashed", 42.0)
    assert payload["finished_at"] == last.isoformat()
    text = CliRunner().invoke(app, ["status", "--store", str(store.path)])
    assert "crashed" in text.output and "running" not in text.output  # header and runs table
    assert [r.status for r in list_runs(store)] == ["crashed"]
    assert store.select(Run)[0].status == "running"  # status only reads


def test_a_pid_reused_by_another_process_is_not_taken_for_the_run(tmp_path: Path) -> None:
    mine = process_started_at(os.getpid())
    assert mine is not None
    reused = running_row("reused", os.getpid(), mine - timedelta(hours=3))
    alive = running_row("alive", os.getpid(), mine, started_at=T0 + timedelta(minutes=1))
    elsewhere = running_row("elsewhere", 2**22 + 7, None, host="another-host")
    assert process_alive(reused) is False
    assert process_alive(alive) is True
    assert process_alive(elsewhere) is None  # cannot be seen from here: left as it is
    store = Store(tmp_path / "s.duckdb")
    store.upsert([reused, alive, elsewhere])
    seen = {r.run_id: r.status for r in list_runs(store)}
    assert seen == {"reused": "crashed", "alive": "running", "elsewhere": "running"}
    current = read_run_status(store)
    assert current is not None and current.run_id == "alive"


def test_an_aware_clock_and_a_naive_start_subtract(tmp_path: Path) -> None:
    run = Run(run_id="r", stage="onboard", started_at=T0)
    later = (T0 + timedelta(seconds=90)).replace(tzinfo=UTC)
    assert build_run_status(run, events_frame([]), now=later).elapsed_s == 90.0
    aware_start = run.model_copy(update={"started_at": T0.replace(tzinfo=UTC)})
    assert (
        build_run_status(aware_start, events_frame([]), now=T0 + timedelta(seconds=5)).elapsed_s
        == 5.0
    )


def test_a_killed_run_is_shown_crashed_and_closed_by_the_next_writing_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    script = (
        "import sys, time\n"
        "from flows.run_context import stage_run\n"
        "from toucan.config import load_settings\n"
        "from toucan.store import Store\n"
        "with stage_run(Store(sys.argv[1]), load_settings(profile='local'), 'synthesize') as ctx:\n"
        "    ctx.events.record(item_id='x', status='ok')\n"
        "    ctx.flush_events()\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(store.path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        live = read_run_status(store)
        assert live is not None and live.status == "running"
    finally:
        child.kill()
        child.wait(timeout=60)
    killed = read_run_status(store)
    assert killed is not None and killed.status == "crashed"
    stopped = killed.elapsed_s
    assert read_run_status(store, killed.run_id).elapsed_s == stopped  # type: ignore[union-attr]

    with stage_run(store, load_settings(profile="local"), "synthesize") as resumed:
        current = read_run_status(store)
        assert current is not None and current.run_id == resumed.run_id
    rows = {r.run_id: r for r in store.select(Run)}
    closed = rows[killed.run_id]
    assert (closed.status, closed.finished_at) == ("crashed", killed.finished_at)
    assert rows[resumed.run_id].status == "completed"
    assert rows[resumed.run_id].host == this_host()


def test_status_shows_why_a_run_did_not_end_clean(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    message = "items_errored: 3 (retryable 3; final 0; given up 0); reasons: rate_limited 3"
    outcome = {"state": "CompletedWithErrors", "message": message}
    store.upsert([Run(run_id="r", stage="filter_tasks", status="completed",
                      started_at=T0, finished_at=T0, summary={"outcome": outcome})])  # fmt: skip
    result = CliRunner().invoke(app, ["status", "--store", str(store.path)], terminal_width=200)
    assert "CompletedWithErrors" in result.output and "items_errored: 3" in result.output


def test_spend_is_shown_per_stage_and_model_over_every_run_and_cached_replies_are_free(
    tmp_path: Path,
) -> None:
    store = _seed_store(tmp_path / "s.duckdb")
    earlier = [
        _event(
            50 + i, run_id="run-s", stage="synthesize", kind="llm_call", model="Gen", cost_usd=0.5
        )
        for i in range(2)
    ]
    earlier.append(
        _event(
            53, run_id="run-s", stage="synthesize", kind="llm_call", model="Gen", status="cached"
        )
    )
    store.insert(earlier)
    runner = CliRunner()

    payload = json.loads(
        runner.invoke(app, ["status", "--store", str(store.path), "--json"]).stdout
    )
    text = runner.invoke(app, ["status", "--store", str(store.path)]).output

    assert payload["spent_usd"] == 0.03  # run-a: three answered calls; the 429 billed nothing
    spend = {(row["stage"], row["model"]): row for row in payload["spend"]}
    assert spend[("synthesize", "Gen")] == {
        "stage": "synthesize",
        "model": "Gen",
        "paid_calls": 2,
        "cached_calls": 1,
        "spent_usd": 1.0,
    }
    assert spend[("trajectories", "GPT-4o-mini")]["paid_calls"] == 3
    assert spend[("trajectories", "GPT-4o-mini")]["spent_usd"] == 0.03
    assert "spend per stage and model" in text and "1.0300" in text  # the store's total
