#!/usr/bin/env python3
"""A raw JSON-RPC-over-stdio MCP server driven by a JSON config (stdlib only).

Copied from the shared mcp-quirks cases (ruff-clean); its configs are in tests/data/quirks/.

Usage: python rawserver.py CONFIG.json

Config keys (all optional):
  banner: [str]            lines printed to stdout before anything else
  stderr_lines: int        lines written to stderr at start (heavy logging)
  stderr_per_call: int     lines written to stderr on every request
  init: "normal" | "hang" | {"delay": seconds}
  protocol: str            protocolVersion to answer (default: echo the client's)
  capabilities: {}         server capabilities (default {"tools": {"listChanged": true}})
  tools: [tool objects]    as sent in tools/list
  tools_v2: [tool objects] tool list after a `list_changed` behaviour fires
  page_size: int           paginate tools/list by nextCursor
  stuck_cursor: bool       always return page 1 with the same nextCursor
  behaviours: {tool name: {...}}
      result: {...}        the CallToolResult to return (default: text echo of arguments)
      text_chars: int      return a text block of this many characters
      delay: s             sleep before answering
      progress_every: s    send notifications/progress every s seconds while sleeping `delay`
      crash: true          exit the process (code 3) instead of answering
      error: {code, message}  answer with a JSON-RPC error
      sample: true         send sampling/createMessage to the client first and wait for the reply
      elicit: true         send elicitation/create to the client first and wait for the reply
      list_changed: true   after answering, switch to tools_v2 and send notifications/tools/list_changed
"""

import json
import os
import sys
import time

LOG = os.environ.get("RAW_LOG")  # optional file to record what the client sent


def log(entry):
    if LOG:
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry)[:4000] + "\n")


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_message():
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    line = line.strip()
    if not line:
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


def main():
    with open(sys.argv[1], encoding="utf-8") as config_file:
        config = json.load(config_file)
    for line in config.get("banner", []):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    if config.get("banner_nonl"):
        sys.stdout.write(config["banner_nonl"])  # no newline: the next JSON line is glued to it
        sys.stdout.flush()
    for i in range(config.get("stderr_lines", 0)):
        sys.stderr.write(f"[log] starting up, step {i}: " + "x" * 100 + "\n")
    sys.stderr.flush()
    tools = list(config.get("tools", []))
    behaviours = config.get("behaviours", {})
    page_size = config.get("page_size")
    next_out_id = [1000]

    def request_client(method, params):
        out_id = next_out_id[0]
        next_out_id[0] += 1
        send({"jsonrpc": "2.0", "id": out_id, "method": method, "params": params})
        deadline = time.time() + 30
        while time.time() < deadline:
            msg = read_message()
            if msg is None:
                continue
            log({"recv_while_waiting": msg})
            if msg.get("id") == out_id and "method" not in msg:
                return msg
            # anything else is ignored while we wait (simple server)
        return {"error": "no reply in 30 s"}

    while True:
        msg = read_message()
        if msg is None:
            continue
        log({"recv": msg})
        for _ in range(config.get("stderr_per_call", 0)):
            sys.stderr.write("[log] handling " + str(msg.get("method")) + " " + "y" * 200 + "\n")
        sys.stderr.flush()
        method = msg.get("method")
        mid = msg.get("id")
        params = msg.get("params") or {}
        if method is None:
            continue  # a response to something; ignore
        if mid is None:
            continue  # a notification
        if method == "initialize":
            init = config.get("init", "normal")
            if init == "hang":
                continue
            if isinstance(init, dict) and init.get("delay"):
                time.sleep(init["delay"])
            version = config.get("protocol") or params.get("protocolVersion") or "2025-06-18"
            send(
                {
                    "jsonrpc": "2.0",
                    "id": mid,
                    "result": {
                        "protocolVersion": version,
                        "capabilities": config.get(
                            "capabilities", {"tools": {"listChanged": True}}
                        ),
                        "serverInfo": {"name": config.get("name", "raw"), "version": "0.0.1"},
                    },
                }
            )
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": mid, "result": {}})
        elif method == "tools/list":
            cursor = params.get("cursor")
            if page_size:
                start = 0
                if cursor and not config.get("stuck_cursor"):
                    start = int(cursor.split(":")[1])
                page = tools[start : start + page_size]
                result = {"tools": page}
                if config.get("stuck_cursor"):
                    result["nextCursor"] = "page:1"
                elif start + page_size < len(tools):
                    result["nextCursor"] = f"page:{start + page_size}"
            else:
                result = {"tools": tools}
            send({"jsonrpc": "2.0", "id": mid, "result": result})
        elif method == "tools/call":
            name = params.get("name")
            args = params.get("arguments") or {}
            b = behaviours.get(name, {})
            if name not in {t["name"] for t in tools}:
                send(
                    {
                        "jsonrpc": "2.0",
                        "id": mid,
                        "error": {"code": -32602, "message": f"Unknown tool: {name}"},
                    }
                )
                continue
            if b.get("crash"):
                sys.stderr.write("fatal: segfault-like crash in tool\n")
                sys.stderr.flush()
                os._exit(3)
            if b.get("error"):
                send({"jsonrpc": "2.0", "id": mid, "error": b["error"]})
                continue
            extra = []
            if b.get("sample"):
                reply = request_client(
                    "sampling/createMessage",
                    {
                        "messages": [
                            {
                                "role": "user",
                                "content": {"type": "text", "text": "Summarise: hello"},
                            }
                        ],
                        "maxTokens": 50,
                    },
                )
                extra.append("sampling reply: " + json.dumps(reply)[:300])
            if b.get("elicit"):
                reply = request_client(
                    "elicitation/create",
                    {
                        "message": "Please confirm the deletion",
                        "requestedSchema": {
                            "type": "object",
                            "properties": {"ok": {"type": "boolean"}},
                        },
                    },
                )
                extra.append("elicitation reply: " + json.dumps(reply)[:300])
            delay = b.get("delay", 0)
            if b.get("progress_every"):
                token = (params.get("_meta") or {}).get("progressToken")
                log({"progress_token_from_client": token})
                step = b["progress_every"]
                elapsed = 0.0
                while elapsed < delay:
                    time.sleep(step)
                    elapsed += step
                    note = {
                        "progress": elapsed,
                        "total": delay,
                        "message": f"{elapsed}s of {delay}s",
                    }
                    note["progressToken"] = token if token is not None else "server-made-token"
                    send({"jsonrpc": "2.0", "method": "notifications/progress", "params": note})
            elif delay:
                time.sleep(delay)
            if "result" in b:
                result = b["result"]
            elif b.get("text_chars"):
                n = b["text_chars"]
                chunk = "lorem ipsum dolor sit amet " * (n // 27 + 1)
                result = {"content": [{"type": "text", "text": chunk[:n]}]}
            else:
                result = {"content": [{"type": "text", "text": f"{name} ok: " + json.dumps(args)}]}
            if extra:
                result = json.loads(json.dumps(result))
                result.setdefault("content", []).append({"type": "text", "text": "\n".join(extra)})
            send({"jsonrpc": "2.0", "id": mid, "result": result})
            if b.get("list_changed") and config.get("tools_v2") is not None:
                tools = list(config["tools_v2"])
                send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        else:
            send(
                {
                    "jsonrpc": "2.0",
                    "id": mid,
                    "error": {"code": -32601, "message": f"Method not found: {method}"},
                }
            )


if __name__ == "__main__":
    main()
