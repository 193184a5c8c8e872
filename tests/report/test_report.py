"""`toucan report`: the HTML page renders its charts in headless Chromium, offline."""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from tests.export.seeding import seed_pipeline
from toucan.records import Event, Record, Run, RunProgress
from toucan.store import Store

CHART_IDS = (
    "funnel",
    "servers-per-domain",
    "task-shape",
    "trajectory-shape",
    "task-scores",
    "trajectory-scores",
    "servers",
    "models",
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
CHROMIUM_TIMEOUT_S = 120  # a cold start on a busy 2-core box


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed here when missing and we may (CI installs it up front)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, check=False)
        found = shutil.which("chromium")
    if found is None:
        pytest.fail("headless Chromium is needed: apt-get install -y chromium")
    return found


def run_chromium(chromium: str, tmp_path: Path, *args: str) -> str:
    """Run Chromium in its own process group with a fresh profile; kill the group on timeout."""
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        stdout, _ = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return stdout.decode("utf-8", "replace")


def unfilter_row(kind: int, line: bytes, previous: bytearray, channels: int) -> bytearray:
    """Undo one PNG scanline filter (0 none, 1 sub, 2 up, 3 average, 4 paeth)."""
    if kind == 0:
        return bytearray(line)
    if kind == 2:
        return bytearray(
            (
                (
                    np.frombuffer(line, np.uint8).astype(np.uint16)
                    + np.frombuffer(bytes(previous), np.uint8)
                )
                & 0xFF
            ).astype(np.uint8)
        )
    out = bytearray(len(line))
    for x, value in enumerate(line):
        left = out[x - channels] if x >= channels else 0
        up = previous[x]
        if kind == 1:
            predictor = left
        elif kind == 3:
            predictor = (left + up) // 2
        else:
            corner = previous[x - channels] if x >= channels else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
        out[x] = (value + predictor) & 0xFF
    return out


def decode_png(data: bytes) -> np.ndarray:
    """RGB(A) 8-bit non-interlaced PNG -> array (what Chromium writes); no Pillow needed."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, header = 8, b"", None
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0 and color in (2, 6)
    channels = 4 if color == 6 else 3
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        previous = unfilter_row(raw[start], raw[start + 1 : start + 1 + stride], previous, channels)
        rows.append(bytes(previous))
    pixels = np.frombuffer(b"".join(rows), np.uint8).reshape(height, width, channels)
    return pixels[:, :, :3].astype(np.int32)


def test_the_report_renders_every_chart_in_headless_chromium(chromium, tmp_path):
    store = Store(tmp_path / "toucan.duckdb")
    seed_pipeline(store)
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--out", str(page), "--store", str(store.path)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "<script src=" not in text and len(text) > 3_000_000  # plotly.js inline, no CDN

    dom = run_chromium(
        chromium, tmp_path, "--virtual-time-budget=15000", "--dump-dom", page.as_uri()
    )
    assert dom.count('class="plot-container plotly"') == len(CHART_IDS)
    assert dom.count('class="main-svg"') >= len(CHART_IDS)
    for chart_id in CHART_IDS:
        assert f'id="{chart_id}"' in dom
    assert 'class="funnellayer' in dom and dom.count('class="point"') > 10  # drawn marks

    shot = tmp_path / "shot.png"
    run_chromium(
        chromium,
        tmp_path,
        "--virtual-time-budget=15000",
        "--window-size=600,800",
        f"--screenshot={shot}",
        page.as_uri(),
    )
    pixels = decode_png(shot.read_bytes())
    not_white = (pixels < 235).any(axis=2)
    assert not_white.mean() > 0.05  # a blank page is all white
    plotly_blue = (pixels == (99, 110, 250)).all(axis=2)  # the funnel's bars
    assert plotly_blue.mean() > 0.02


def test_the_report_of_an_empty_store_still_renders(chromium, tmp_path):
    store = Store(tmp_path / "empty.duckdb")
    store.ensure_schema()
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--out", str(page), "--store", str(store.path)])
    assert result.exit_code == 0, result.output
    dom = run_chromium(
        chromium, tmp_path, "--virtual-time-budget=15000", "--dump-dom", page.as_uri()
    )
    assert dom.count('class="plot-container plotly"') == len(CHART_IDS)


def test_the_report_refuses_a_missing_store(tmp_path):
    result = CliRunner().invoke(
        app, ["report", "--out", str(tmp_path / "r.html"), "--store", str(tmp_path / "no.duckdb")]
    )
    assert result.exit_code == 2
    assert not (tmp_path / "r.html").exists()


def test_the_report_has_a_table_of_the_latest_run_of_each_stage(tmp_path):
    store = Store(tmp_path / "toucan.duckdb")
    seed_pipeline(store)
    start = datetime(2026, 1, 1, 12, 0, 0)

    def run(run_id: str, stage: str, minutes: int, planned: int, failed: int) -> list[Record]:
        began = start + timedelta(minutes=minutes)
        return [
            Run(
                run_id=run_id,
                stage=stage,
                status="completed",
                started_at=began,
                finished_at=began + timedelta(seconds=90),
            ),
            RunProgress(
                run_id=run_id, stage=stage, planned=planned, finished=planned, failed=failed
            ),
        ]

    store.upsert(
        [
            *run("old", "filter_tasks", 0, 10, 4),
            *run("new", "filter_tasks", 5, 6, 1),
            *run("traj", "trajectories", 10, 3, 0),
        ]
    )
    calls = {"e1": 0.25, "e2": 0.5}  # the latest filter-tasks run's two model calls
    store.insert(
        [
            Event(event_id=key, run_id="new", stage="filter_tasks", kind="llm_call", cost_usd=cost)
            for key, cost in calls.items()
        ]
    )
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--out", str(page), "--store", str(store.path)])
    assert result.exit_code == 0, result.output
    section = page.read_text().split('<section id="stages">', 1)[1].split("</section>", 1)[0]
    cells = [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in section.split("<tr>")[1:]]
    assert cells == [
        ["stage", "status", "planned", "done", "failed", "retryable", "cost (USD)", "wall (s)"],
        ["filter_tasks", "completed", "6", "5", "1", "-", "0.75", "90.0"],  # the latest run only
        ["trajectories", "completed", "3", "3", "0", "-", "-", "90.0"],
    ]
