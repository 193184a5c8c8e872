"""From process start to the model layer's first request, on the direct transport; and the
wall time of `toucan servers` and `toucan status` on a demo-sized store.

    .venv/bin/python bench/bench_start.py [--repeats 5] [--code /work/main]

The fake model server runs in its own process and records when the first request arrives
(`first_arrival` of `/_fake/calls`). Each repeat spawns a fresh interpreter that does what a
stage does before its first call (load the settings from a YAML file, build an `LlmRouter`,
`complete` one judge call) and measures spawn -> arrival, wall clock. Every deployment is
OpenAI-compatible with its own `api_base`, so the direct transport serves it and LiteLLM is
never needed. The median of the repeats is printed for this checkout and, with `--code`, for
another one (e.g. the main checkout, before the change), the two taking turns so the machine's
load hits them alike. Target: under 1.5 s (issue 12, fault 7). Import costs behind a figure:
`python -X importtime -c "import toucan.llm.router"`.

The read-only commands are timed the same way (spawn to exit, median of the repeats) on a
store the size of the demo's: the bundled fleet onboarded for real (20 servers, about 300
tools; needs `.fleet`) plus a finished filter-tasks run of 400 items with their model calls.
Target: under 1 s each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fake_llm import control, run_fake_llm_process  # noqa: E402

TARGET_S = 1.5
COMMAND_TARGET_S = 1.0
DEMO_ITEMS = 400
CLIENT = """
import asyncio, sys
from toucan.config import load_settings
from toucan.llm.router import LlmRouter

async def first_call():
    router = LlmRouter(load_settings(sys.argv[1]).models)
    await router.complete("judge", [{"role": "user", "content": "first"}], use_cache=False)
    await router.aclose()

asyncio.run(first_call())
"""


def write_config(base_url: str, folder: Path) -> Path:
    """A settings file whose every deployment is the fake server (profile cloud: no local
    model server is started)."""
    deployment = {"name": "bench", "model": "openai/bench", "api_base": base_url}
    config = {
        "profile": "cloud",
        "models": {"generators": [deployment], "teachers": [deployment], "judge": [deployment]},
    }
    path = folder / "toucan.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def measure_once(base_url: str, code: Path, config: Path) -> float:
    """Seconds from spawning the client interpreter to the fake server seeing its request."""
    control(base_url, "/_fake/reset", "POST")
    environment = {**os.environ, "PYTHONPATH": str(code), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    started = time.time()
    subprocess.run(
        [sys.executable, "-c", CLIENT, str(config)],
        cwd=code,
        env=environment,
        check=True,
        timeout=300,
    )
    arrived = control(base_url, "/_fake/calls")["first_arrival"]
    if arrived is None:
        raise RuntimeError(f"{code}: the client exited without reaching the fake server")
    return arrived - started


def build_demo_store(path: Path) -> None:
    """The fleet onboarded (real servers) and a finished 400-item filter-tasks run."""
    import asyncio
    from datetime import timedelta

    from flows.runner import run_stage_async
    from toucan.config import load_settings
    from toucan.records import Event, Run, RunProgress, Server, utc_now
    from toucan.store import Store

    store = Store(path)
    asyncio.run(run_stage_async("onboard", load_settings(profile="local"), store))
    names = [s.name for s in store.select(Server, "status = 'ok'")]
    began = utc_now()  # after the onboarding: the run `toucan status` shows
    events = []
    for index in range(DEMO_ITEMS):
        start = began + timedelta(seconds=0.5 * index)
        common = {"run_id": "run-demo", "stage": "filter_tasks", "item_id": f"task{index}"}
        events += [
            Event(event_id=f"item{index}", server=names[index % len(names)], started_at=start,
                  ended_at=start + timedelta(seconds=1), latency_ms=1000.0, **common),
            Event(event_id=f"call{index}", kind="llm_call", model="judge", started_at=start,
                  ended_at=start + timedelta(seconds=1), latency_ms=990.0, tokens_in=900,
                  tokens_out=200, cost_usd=0.0003, **common),
        ]  # fmt: skip
    store.insert(events)
    store.upsert(
        [
            Run(run_id="run-demo", stage="filter_tasks", status="completed", started_at=began,
                finished_at=began + timedelta(seconds=0.5 * DEMO_ITEMS + 1)),
            RunProgress(run_id="run-demo", stage="filter_tasks", planned=DEMO_ITEMS,
                        finished=DEMO_ITEMS),
        ]
    )  # fmt: skip


def time_command(code: Path, args: list[str]) -> float:
    """Seconds from spawning `python -m cli ARGS` (in checkout `code`) to its exit."""
    environment = {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=code,
        env=environment,
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def report(title: str, timings: dict[str, list[float]], target: float) -> None:
    print(title)
    for name, values in timings.items():
        median = statistics.median(values)
        verdict = "ok" if median < target else f"over the {target} s target"
        spread = ", ".join(f"{value:.2f}" for value in values)
        print(f"  {name:<40} {median:5.2f} s   ({spread})  {verdict}")


def main(repeats: int, other: Path | None) -> None:
    checkouts = {"this checkout": ROOT}
    if other is not None:
        checkouts = {f"{other} (before)": other, **checkouts}
    timings: dict[str, list[float]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as folder, run_fake_llm_process() as base_url:
        config = write_config(base_url, Path(folder))
        for _ in range(repeats):
            for name, code in checkouts.items():
                timings[name].append(measure_once(base_url, code, config))
    report(
        f"process start -> first model request (direct transport), median of {repeats}:",
        timings,
        TARGET_S,
    )
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "demo.duckdb"
        build_demo_store(store)
        for command in ("servers", "status"):
            walls: dict[str, list[float]] = {name: [] for name in checkouts}
            for _ in range(repeats):
                for name, code in checkouts.items():
                    walls[name].append(time_command(code, [command, "--store", str(store)]))
            report(f"`toucan {command}` on the demo-sized store, median of {repeats}:", walls,
                   COMMAND_TARGET_S)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--code", type=Path, help="another checkout to measure beside this one")
    arguments = parser.parse_args()
    main(arguments.repeats, arguments.code)
