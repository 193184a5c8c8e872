"""Issue 15, fault 6: a hanging or junk-answering server costs about one call timeout, not one
per call: one server breaker per run counts across batches, calls to a server known to hang
are not sent to wait in turn, and junk is classed `junk_reply` (tasks/agent/breaker.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from flows.registry import trajectories_flow
from tasks.agent.breaker import SERVER_HANGING, ServerBreaker
from tests.fake_llm import FakeLlm
from tests.mcp_env.conftest import quirk_spec
from tests.trajectories.helpers import (
    dispatch_script,
    kept_task,
    seed_store,
    server_row,
    tiny_spec,
    write_config,
)
from toucan.breaker import Paused
from toucan.records import Trajectory
from toucan.store import Store

THRESHOLD = 5
CALL_TIMEOUT_S = 2.0


async def answered(value: str = "ok") -> str:
    return value


def test_after_a_timeout_one_probe_goes_and_the_other_calls_fail_at_once() -> None:
    breaker = ServerBreaker(THRESHOLD)
    breaker.record_failure("srv", "tool_timeout", "no answer")

    async def run() -> tuple[object, object]:
        probe_sent = asyncio.Event()
        release = asyncio.Event()

        async def slow_probe() -> str:
            probe_sent.set()
            await release.wait()
            return "probe answered"

        probe = asyncio.ensure_future(breaker.watch_for_hang("srv", slow_probe))
        await probe_sent.wait()
        refused = await breaker.watch_for_hang("srv", answered)
        release.set()
        return await probe, refused

    probe, refused = asyncio.run(run())
    assert probe == "probe answered"
    assert isinstance(refused, Paused) and refused.reason == SERVER_HANGING
    assert breaker.failures["srv"] == 2  # the refusal counted; the caller records the probe's
    breaker.record_success("srv")
    assert asyncio.run(breaker.watch_for_hang("srv", answered)) == "ok"


def test_two_hangs_in_a_row_send_nothing_more_until_the_server_is_paused() -> None:
    breaker = ServerBreaker(THRESHOLD)
    breaker.record_failure("srv", "tool_timeout")
    breaker.record_failure("srv", "junk_reply")
    sent: list[str] = []

    async def call() -> str:
        sent.append("call")
        return "ok"

    outcomes = [asyncio.run(breaker.watch_for_hang("srv", call)) for _ in range(4)]
    assert sent == []
    assert [o.reason for o in outcomes if isinstance(o, Paused)] == [SERVER_HANGING] * 4
    assert breaker.paused("srv") is not None and breaker.failures["srv"] == 5


def test_once_known_to_hang_the_calls_still_waiting_on_the_server_stop_and_count() -> None:
    breaker = ServerBreaker(THRESHOLD)

    async def run() -> list[object]:
        started = asyncio.Semaphore(0)

        async def never() -> str:
            started.release()
            await asyncio.sleep(3600)
            return "answered"

        waiting = [asyncio.ensure_future(breaker.watch_for_hang("srv", never)) for _ in range(6)]
        for _ in waiting:
            await started.acquire()
        breaker.record_failure("srv", "tool_timeout")  # two other calls timed out
        breaker.record_failure("srv", "tool_timeout")
        async with asyncio.timeout(30):
            return list(await asyncio.gather(*waiting))

    outcomes = asyncio.run(run())
    assert all(isinstance(o, Paused) for o in outcomes)
    assert breaker.paused("srv") is not None and breaker.failures["srv"] == 2 + 6


def test_a_crash_is_no_hang_and_a_slow_tool_is_cleared_by_the_next_answer() -> None:
    breaker = ServerBreaker(THRESHOLD)
    breaker.record_failure("srv", "server_crashed")
    breaker.record_failure("srv", "server_crashed")
    assert asyncio.run(breaker.watch_for_hang("srv", answered)) == "ok"  # no probe needed
    breaker.record_failure("srv", "tool_timeout")  # one slow tool
    assert asyncio.run(breaker.watch_for_hang("srv", answered)) == "ok"  # the probe
    breaker.record_success("srv")
    assert breaker.hangs == {} and breaker.failures["srv"] == 0


def test_a_hanging_server_gets_about_one_timeout_across_batches_and_junk_is_named(
    fake_llm: FakeLlm, tmp_path: Path, prefect_harness: None
) -> None:
    """16 items on a hanging server split over two batches that run at once, 2 items in flight
    each: one breaker for the run pauses it after the first wave. Counted per batch, each
    batch needed five timeouts of its own (three waves of two)."""
    hung = server_row(quirk_spec("broken_answers", name="hung"))
    junk = server_row(quirk_spec("broken_answers", name="junk"))
    good = server_row(tiny_spec(tmp_path / "good.log", name="good"))
    tasks = [kept_task(f"[hung] q{n}", [hung], [(hung, "stall")]) for n in range(16)]
    tasks += [kept_task(f"[junk] q{n}", [junk], [(junk, "junk_text")]) for n in range(8)]
    tasks += [kept_task(f"[good] q{n}", [good], [(good, "echo")]) for n in range(8)]
    fake_llm.script(
        [
            dispatch_script(
                {
                    "[hung]": [[("stall", {"text": "x"})]],
                    "[junk]": [[("junk_text", {"text": "x"})]],
                    "[good]": [[("echo", {"text": "hi"})]],
                }
            )
        ]
    )
    store = Store(tmp_path / "t.duckdb")
    seed_store(store, [hung, junk, good], tasks)
    config = write_config(
        tmp_path / "toucan.yaml",
        fake_llm.base_url,
        # batches of 8 items: hung 2, junk 1, good 1, all running at once, 2 items each
        trajectories={"concurrency": 8},
        mcp={
            "circuit_breaker_failures": THRESHOLD,
            "call_timeout_s": CALL_TIMEOUT_S,
            "call_timeout_max_s": CALL_TIMEOUT_S,
        },
    )

    summary = trajectories_flow(store=str(store.path), config=str(config), profile="cloud")

    rows = store.select(Trajectory)
    assert len(rows) == 32
    good_rows = [r for r in rows if "[good]" in r.metadata["question"]]
    assert all(r.status == "ok" and r.tool_errors == 0 for r in good_rows)
    assert set(summary.paused_servers) == {"hung", "junk"}
    reasons = Counter(
        entry.error_reason
        for row in rows
        if "[hung]" in row.metadata["question"]
        for entry in row.tool_call_log
    )
    # sent and waited for: the first wave (4 in flight) and at most one probe, never a
    # second wave per batch (counted per batch: at least 5 in each of the two batches)
    assert 1 <= reasons["tool_timeout"] <= THRESHOLD
    assert set(reasons) <= {"tool_timeout", "server_hanging", "server_paused"}
    junk_reasons = {
        entry.error_reason
        for row in rows
        if "[junk]" in row.metadata["question"]
        for entry in row.tool_call_log
    }
    assert "junk_reply" in junk_reasons and "tool_timeout" not in junk_reasons
