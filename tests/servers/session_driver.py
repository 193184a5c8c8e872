"""Stands in for a toucan process in sandbox tests: opens one MCP session and calls tools.

    python session_driver.py SPEC_JSON MODE SANDBOX_ROOT [--blank] [--hold] TOOL ...

Prints one JSON line per tool ({"tool": name, "result": parsed text}); with --blank it first
does what the `toucan` command does at start (blank_start_environment); with --hold it prints
"ready" after the calls and keeps the session open until its stdin closes (or it is killed).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mcp_env.session import open_session
from mcp_env.specs import parse_server_spec
from toucan.secrets import blank_start_environment


async def drive(spec_json: str, mode: str, root: str, tools: list[str], hold: bool) -> None:
    spec = parse_server_spec(json.loads(spec_json))
    async with open_session(
        spec, sandbox_root=Path(root), connect_timeout=120, isolation=mode
    ) as session:
        for tool in tools:
            result = await session.call_tool(tool, {})
            print(json.dumps({"tool": tool, "result": json.loads(result.text)}), flush=True)
        if hold:
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.read)


def main() -> None:
    spec_json, mode, root, *rest = sys.argv[1:]
    if "--blank" in rest:
        blank_start_environment()
    tools = [word for word in rest if not word.startswith("--")]
    asyncio.run(drive(spec_json, mode, root, tools, "--hold" in rest))


if __name__ == "__main__":
    main()
