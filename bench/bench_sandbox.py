"""What the sandbox costs a server start: spawn to initialized, tools/list and stop, per mode.

Each fleet server is opened with `open_session` (sandbox dir, seed copy, handshake), listed and
closed, `--repeats` times, the modes taking turns so machine load hits them alike; the table
shows medians in ms. `--code` imports mcp_env from another checkout, so the same measurement
runs against the code before a change:

    .venv/bin/python bench/bench_sandbox.py --modes bwrap helper
    .venv/bin/python bench/bench_sandbox.py --code /work/main --modes default
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ["kglite", "mcp-server-time", "sqlite", "memory", "filesystem", "word"]


async def measure_once(spec, fleet_dir: Path, box_root: Path, mode: str) -> tuple[float, ...]:
    from mcp_env.session import open_session

    isolation = None if mode == "default" else mode
    started = time.perf_counter()
    async with open_session(
        spec,
        sandbox_root=box_root,
        seed_dir=fleet_dir / "seed",
        fleet_dir=fleet_dir,
        connect_timeout=120,
        isolation=isolation,
    ) as session:
        opened = time.perf_counter()
        await session.list_tools()
        listed = time.perf_counter()
    stopped = time.perf_counter()
    return (opened - started) * 1000, (listed - opened) * 1000, (stopped - listed) * 1000


async def run(names: list[str], modes: list[str], repeats: int, fleet_dir: Path) -> None:
    from mcp_env.fleet.catalog import load_fleet_catalog
    from mcp_env.specs import parse_server_spec

    specs = {raw["name"]: parse_server_spec(raw) for raw in load_fleet_catalog(fleet_dir)}
    timings: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as box_root:
        for name in names:
            await measure_once(specs[name], fleet_dir, Path(box_root), modes[0])  # warm caches
            for _ in range(repeats):
                for mode in modes:
                    sample = await measure_once(specs[name], fleet_dir, Path(box_root), mode)
                    timings.setdefault((name, mode), []).append(sample)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; medians of {repeats} (ms)")
    print("| server | mode | start | list | stop |\n|---|---|---|---|---|")
    for (name, mode), samples in timings.items():
        start, listing, stop = (statistics.median(column) for column in zip(*samples, strict=True))
        print(f"| {name} | {mode} | {start:.0f} | {listing:.0f} | {stop:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="*", default=SERVERS)
    parser.add_argument("--modes", nargs="*", default=["bwrap", "helper"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout to import from")
    parser.add_argument("--fleet-dir", type=Path, default=ROOT / ".fleet")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    asyncio.run(run(args.servers, args.modes, args.repeats, args.fleet_dir.resolve()))


if __name__ == "__main__":
    main()
