"""From process start to the model layer's first request, on the direct transport.

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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fake_llm import run_fake_llm_process  # noqa: E402

TARGET_S = 1.5
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


def fake_call(base_url: str, path: str, method: str = "GET") -> dict:
    root = base_url.removesuffix("/v1")
    body = b"" if method == "POST" else None
    request = urllib.request.Request(root + path, method=method, data=body)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def measure_once(base_url: str, code: Path, config: Path) -> float:
    """Seconds from spawning the client interpreter to the fake server seeing its request."""
    fake_call(base_url, "/_fake/reset", "POST")
    environment = {**os.environ, "PYTHONPATH": str(code), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    started = time.time()
    subprocess.run(
        [sys.executable, "-c", CLIENT, str(config)],
        cwd=code,
        env=environment,
        check=True,
        timeout=300,
    )
    arrived = fake_call(base_url, "/_fake/calls")["first_arrival"]
    if arrived is None:
        raise RuntimeError(f"{code}: the client exited without reaching the fake server")
    return arrived - started


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
    print(f"process start -> first model request (direct transport), median of {repeats}:")
    for name, values in timings.items():
        median = statistics.median(values)
        verdict = "ok" if median < TARGET_S else f"over the {TARGET_S} s target"
        spread = ", ".join(f"{value:.2f}" for value in values)
        print(f"  {name:<40} {median:5.2f} s   ({spread})  {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--code", type=Path, help="another checkout to measure beside this one")
    arguments = parser.parse_args()
    main(arguments.repeats, arguments.code)
