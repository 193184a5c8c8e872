"""A signal during a store write is held back until the write ends, then delivered to the
handler in force; a stage run stopped that way is recorded as interrupted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from flows.run_context import stage_run
from toucan.config import load_settings
from toucan.interrupts import handle_signals, uninterrupted
from toucan.records import Run, Server
from toucan.store import Store


@pytest.fixture
def sigterm_as_interrupt() -> object:
    previous = signal.getsignal(signal.SIGTERM)
    handle_signals()
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("sigterm_as_interrupt")
def test_a_signal_inside_a_write_arrives_after_it() -> None:
    reached_end = False
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), uninterrupted():
        os.kill(os.getpid(), signal.SIGTERM)
        reached_end = True
    assert reached_end
    with pytest.raises(KeyboardInterrupt):  # outside a write it interrupts at once
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.usefixtures("sigterm_as_interrupt")
def test_a_stage_run_stopped_by_sigterm_is_interrupted_and_keeps_its_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    settings = load_settings(profile="local")
    with pytest.raises(KeyboardInterrupt), stage_run(store, settings, "onboard") as ctx:
        ctx.store.insert(
            [Server(server_id="s1", name="s1", source="fleet", transport="stdio", status="ok")]
        )
        os.kill(os.getpid(), signal.SIGTERM)
    (run,) = store.select(Run)
    assert run.status == "interrupted"
    assert store.count(Server) == 1
