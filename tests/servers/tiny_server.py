"""Tiny real MCP servers for the mcp_env tests; `--mode` picks the behaviour.

good (default)   tools echo, add, slow, boom (raises), big (5 MB text), die (exits), picture,
                 whoami (env/files seen by the process); every call is appended to --log as
                 "<instance id> <event>" (the id is per process, not its pid)
crash            exits with status 3 before reading anything
hang             reads requests and never answers (not even initialize)
malformed        answers initialize, then returns a tools/list result that is not a tool list
noisy            the good server, with a non-JSON line printed on stdout before it starts

Transports: `--transport stdio|streamable-http|sse --port N` (HTTP ones serve on 127.0.0.1).
"""

import argparse
import json
import os
import random
import socket
import sys
import time
from pathlib import Path

BIG_RESULT_CHARS = 5 * 1024 * 1024
# names this process in the log: in a sandbox's PID namespace every server is pid 2, so the pid
# cannot tell two servers apart; above any pid (pid_max <= 2**22), so never taken for one
INSTANCE_ID = random.randrange(10**9, 2 * 10**9)


def append_log(log_path: str | None, line: str) -> None:
    if log_path:
        with open(log_path, "a", encoding="utf-8") as log_file:
            log_file.write(f"{INSTANCE_ID} {line}\n")


def build_good_server(log_path: str | None):
    """Imported lazily: the mcp package is slow to import, and crash/hang need none of it."""
    import anyio
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ImageContent

    server = MCPServer(name="tiny-good", log_level="ERROR")

    @server.tool(description="Echo the text back.")
    def echo(text: str) -> str:
        append_log(log_path, "echo")
        return text

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        append_log(log_path, "add")
        return a + b

    @server.tool(description="Sleep, then answer; records how many calls overlap.")
    async def slow(seconds: float) -> str:
        append_log(log_path, "slow-start")
        await anyio.sleep(seconds)
        append_log(log_path, "slow-end")
        return f"slept {seconds}"

    @server.tool(description="Always fails.")
    def boom() -> str:
        append_log(log_path, "boom")
        raise ValueError("boom went the tool")

    @server.tool(description="Return a 5 MB text.")
    def big() -> str:
        append_log(log_path, "big")
        return "x" * BIG_RESULT_CHARS

    @server.tool(description="Kill the server process.")
    def die() -> str:
        append_log(log_path, "die")
        os._exit(7)

    @server.tool(description="Return a tiny image.")
    def picture() -> ImageContent:
        append_log(log_path, "picture")
        return ImageContent(type="image", data="iVBORw0KGgo=", mime_type="image/png")

    @server.tool(description="Report an environment variable and whether a path is readable.")
    def whoami(variable: str, path: str = "") -> str:
        append_log(log_path, "whoami")
        readable = False
        if path:
            try:
                Path(path).read_bytes()
                readable = True
            except OSError:
                readable = False
        return json.dumps(
            {"value": os.environ.get(variable), "readable": readable, "cwd": os.getcwd()}
        )

    @server.tool(description="Try a TCP connection to 127.0.0.1:port.")
    def can_connect(port: int) -> str:
        append_log(log_path, "can_connect")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return "connected"
        except OSError as error:
            return f"refused: {error}"

    return server


def run_raw_stdio(answer_tools: bool) -> None:
    """A hand-written JSON-RPC loop, for servers that break the protocol on purpose."""
    for line in sys.stdin:
        message = json.loads(line)
        if not answer_tools or "id" not in message:
            continue
        if message["method"] == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "tiny-malformed", "version": "0"},
            }
        elif message["method"] == "tools/list":
            result = {"tools": [{"description": "no name", "inputSchema": 5}]}
        else:
            result = {}
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="good")
    parser.add_argument("--log", default=None)
    parser.add_argument("--tag", default="", help="marks the processes of one test run")
    parser.add_argument("--transport", default="stdio")
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args()
    append_log(options.log, f"start {options.mode}")
    if options.mode == "crash":
        sys.stderr.write("tiny server: refusing to start\n")
        sys.exit(3)
    if options.mode == "hang":
        while True:
            time.sleep(3600)
    if options.mode == "malformed":
        run_raw_stdio(answer_tools=True)
        return
    if options.mode == "noisy":
        sys.stdout.write("Welcome to the noisy server!\n")
        sys.stdout.flush()
    server = build_good_server(options.log)
    if options.transport == "stdio":
        server.run()
    else:
        server.run(options.transport, host="127.0.0.1", port=options.port)


if __name__ == "__main__":
    main()
