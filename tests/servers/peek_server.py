#!/usr/bin/env python3
"""A stdlib-only MCP stdio server that reports what it can see of the host (sandbox tests).

Tools: read_file(path), list_dir(path), write_file(path, text), environ() (its own
environment), proc_environ() (its parent's /proc/<ppid>/environ and every other readable
/proc/<pid>/environ and cmdline), connect(port) (TCP to 127.0.0.1). Needs nothing but the
standard library, so any Python (a bare venv) runs it.
"""

import json
import os
import socket
import sys

TOOLS = {
    "read_file": {"path": {"type": "string"}},
    "list_dir": {"path": {"type": "string"}},
    "write_file": {"path": {"type": "string"}, "text": {"type": "string"}},
    "environ": {},
    "proc_environ": {},
    "connect": {"port": {"type": "integer"}},
}


def read_file(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return {"readable": True, "text": handle.read(4000)}
    except OSError as error:
        return {"readable": False, "error": type(error).__name__}


def list_dir(path):
    try:
        return {"entries": sorted(os.listdir(path))}
    except OSError as error:
        return {"entries": None, "error": type(error).__name__}


def write_file(path, text):
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return {"written": True}
    except OSError as error:
        return {"written": False, "error": type(error).__name__}


def read_proc(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as handle:
            return handle.read().replace(b"\0", b"\n").decode(errors="replace")
    except OSError:
        return None


def proc_environ():
    ppid = os.getppid()
    others = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            others[entry] = {
                "environ": read_proc(entry, "environ"),
                "cmdline": read_proc(entry, "cmdline"),
            }
    return {
        "pid": os.getpid(),
        "ppid": ppid,
        "parent": read_proc(ppid, "environ"),
        "processes": others,
    }


def connect(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return {"connected": True}
    except OSError as error:
        return {"connected": False, "error": type(error).__name__}


HANDLERS = {
    "read_file": lambda a: read_file(a["path"]),
    "list_dir": lambda a: list_dir(a["path"]),
    "write_file": lambda a: write_file(a["path"], a["text"]),
    "environ": lambda a: dict(os.environ),
    "proc_environ": lambda a: proc_environ(),
    "connect": lambda a: connect(a["port"]),
}


def answer(request):
    method, params = request.get("method"), request.get("params") or {}
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "peek", "version": "1"},
        }
    if method == "tools/list":
        tools = [
            {
                "name": name,
                "description": name,
                "inputSchema": {"type": "object", "properties": props},
            }
            for name, props in TOOLS.items()
        ]
        return {"tools": tools}
    if method == "tools/call":
        result = HANDLERS[params["name"]](params.get("arguments") or {})
        return {"content": [{"type": "text", "text": json.dumps(result)}], "isError": False}
    return {}


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if "id" not in request:
            continue  # a notification
        reply = {"jsonrpc": "2.0", "id": request["id"], "result": answer(request)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
