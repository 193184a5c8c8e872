"""Case 12: one SDK server, served over streamable HTTP or SSE on 127.0.0.1 (argv: transport port)."""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("transport-demo")


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


if __name__ == "__main__":
    transport, port = sys.argv[1], int(sys.argv[2])
    server.run(transport, host="127.0.0.1", port=port)
