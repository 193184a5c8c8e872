"""A fake OpenAI-compatible model server with scripted, deterministic replies, over real HTTP.

Tests and benchmarks talk to it through LiteLLM exactly as they would talk to a provider.

Start it in a test (thread in the test process, random port on 127.0.0.1)::

    from tests.fake_llm import FakeLlm, Rule

    def test_something(fake_llm: FakeLlm):          # fixture: tests/llm/conftest.py re-exports it
        fake_llm.script([
            Rule(contains="weather", answer={"city": "Paris"}),          # JSON content
            Rule(has_tools=True, tool_calls=[("get_weather", {"city": "Paris"}),
                                             ("get_time", {"tz": "CET"})]),  # parallel calls
            Rule(model="Qwen2-72B-Instruct", text="Sure! Here you go."),  # prose
            Rule(times=3, status=429, retry_after=1),                     # first 3 calls: 429
            Rule(on_calls={0, 5}, status=500),                            # calls #0 and #5 fail
            Rule(contains="slow", delay=5.0, answer={"ok": True}),        # slow reply
            Rule(respond=lambda request: {"n": len(request["messages"])}),  # computed reply
        ])
        ... point a deployment at fake_llm.base_url (".../v1"), any api key ...
        assert fake_llm.calls.total == 1
        assert fake_llm.calls.by_model["Qwen2-72B-Instruct"] == 1
        assert fake_llm.calls.by_rule[0] == 1        # index of the rule in the script
        fake_llm.requests[-1]["messages"]            # every request body, in order

Or yourself: `with FakeLlm(latency=0.2) as server: ...`.

Matching: rules are tried in order and the first that matches answers. A rule matches when every
matcher it sets holds: `contains` (substring of the last user message), `model` (request model
name; the `openai/` prefix is LiteLLM's and never reaches the server), `has_tools`, `on_calls`
(0-based index of the request among all chat requests), and `times` (the rule answers at most
that many times, then falls through). When no rule matches, `default` answers: a callable taking
the request body and returning a str (content), a dict/list (sent as JSON content) or a `Rule`
(its reply fields are used). The built-in default `answer_from_schema` returns a JSON object that
satisfies the request's `response_format` JSON schema (minimal values: "x", 1, true, one item),
so a stage's structured calls succeed without any script.

Replies: `answer` (JSON content), `text` (raw content: prose or malformed JSON), `tool_calls`
(list of (name, arguments-dict) pairs), `status` (HTTP error with an OpenAI error body) with
optional `retry_after` seconds, `delay` (seconds before answering, on top of `latency`), or
`respond` (callable as for `default`). Usage tokens are reported (about 4 characters a token).
`stream=true` gets a short SSE stream of the same reply.

Served model: like real providers, a reply's `model` names the snapshot that answered, not the
alias asked for (OpenAI answers a call to `gpt-4o-mini` as `gpt-4o-mini-2024-07-18`). By default
the fake appends `SNAPSHOT_SUFFIX` to the requested name; pass `served_model=` (a function of the
requested name) to change it.

Batch API: `/v1/files` and `/v1/batches` as OpenAI serves them, each line answered by the same
rules as a chat request (and counted in `calls`); jobs follow scripted plans (a completion delay,
an expired, failed or never-ending job, malformed lines, a missing output file) and are counted
in `fake_llm.batches.counts` (tests/fake_llm_batches.py). The Anthropic Messages API and Message
Batches (`/v1/messages`, `/v1/messages/batches`) answer by the same rules and share those jobs,
plans and counts (tests/fake_llm_anthropic.py); point an `anthropic/` deployment's api_base at
`fake_llm.root_url`.

HTTP control endpoints (`control(base_url, path)` calls them from another process): GET `/_fake/calls` (counts, and `first_arrival`: the wall-clock
time the first request arrived, which a start-up benchmark compares with its client's spawn), POST `/_fake/reset`, POST `/_fake/script`
(a JSON list of rules without callables). For benchmarks run it in its own process so its CPU
does not share the client's GIL: `with run_fake_llm_process(latency=1.0) as base_url: ...`, or
`python tests/fake_llm.py --latency 1.0` (prints the base url).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

try:
    from tests.fake_llm_anthropic import FakeAnthropic
    from tests.fake_llm_batches import FakeBatches
except ModuleNotFoundError:  # run as a script (run_fake_llm_process): tests/ itself is on the path
    from fake_llm_anthropic import FakeAnthropic  # type: ignore[no-redef]
    from fake_llm_batches import FakeBatches  # type: ignore[no-redef]

ReplyFn = Callable[[dict[str, Any]], Any]
SNAPSHOT_SUFFIX = "-2024-07-18"
START_TIMEOUT_S = 20.0  # a cold interpreter importing starlette/uvicorn on a busy 2-core box


@dataclass
class Rule:
    """One scripted reply and the requests it answers (see the module docstring)."""

    contains: str | None = None
    model: str | None = None
    has_tools: bool | None = None
    on_calls: set[int] | None = None
    times: int | None = None
    answer: Any = None
    text: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] | None = None
    status: int = 200
    retry_after: float | None = None
    delay: float = 0.0
    respond: ReplyFn | None = None

    def matches(self, request: dict[str, Any], call_index: int, used: int) -> bool:
        if self.times is not None and used >= self.times:
            return False
        if self.on_calls is not None and call_index not in self.on_calls:
            return False
        if self.model is not None and request.get("model") != self.model:
            return False
        if self.has_tools is not None and bool(request.get("tools")) != self.has_tools:
            return False
        return self.contains is None or self.contains in last_user_text(request)


@dataclass
class CallCounts:
    total: int = 0
    by_model: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[int] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    in_flight: int = 0  # requests being answered now
    peak_in_flight: int = 0  # the most at once: what a client's concurrency limits allowed
    first_arrival: float | None = None  # wall-clock time (time.time()) the first request came

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "peak_in_flight": self.peak_in_flight,
            "first_arrival": self.first_arrival,
            "by_model": dict(self.by_model),
            "by_rule": {str(index): count for index, count in self.by_rule.items()},
            "by_status": {str(status): count for status, count in self.by_status.items()},
        }


def user_messages(text: str) -> list[dict[str, str]]:
    """The `messages` of a request of one user turn saying `text` (`last_user_text` reads it)."""
    return [{"role": "user", "content": text}]


def last_user_text(request: dict[str, Any]) -> str:
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


def instance_from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A minimal deterministic value satisfying a JSON schema (the subset pydantic emits)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return instance_from_schema(defs[schema["$ref"].split("/")[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return instance_from_schema(schema[key][0], defs)
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: instance_from_schema(sub, defs) for name, sub in properties.items()}
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        return [instance_from_schema(schema.get("items", {}), defs) for _ in range(count)]
    if kind in ("integer", "number"):
        return max(schema.get("minimum", 1), 1)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "x" * max(1, schema.get("minLength", 1))


def answer_from_schema(request: dict[str, Any]) -> Any:
    """Default reply: a JSON object matching `response_format`'s schema, else the text 'ok'."""
    response_format = request.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema")
    if schema:
        return instance_from_schema(schema)
    if response_format.get("type") == "json_object":
        return {}
    return "ok"


def count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def dated_snapshot(requested: str) -> str:
    """The name a provider answers with: the requested alias pinned to a dated snapshot."""
    return f"{requested}{SNAPSHOT_SUFFIX}"


def build_completion(request: dict[str, Any], rule: Rule, served_model: str) -> dict[str, Any]:
    content: str | None
    if rule.tool_calls is not None or rule.text is not None:
        content = rule.text
    elif isinstance(rule.answer, str):
        content = rule.answer
    else:
        content = json.dumps(rule.answer)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    finish_reason = "stop"
    if rule.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{index}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for index, (name, arguments) in enumerate(rule.tool_calls)
        ]
        finish_reason = "tool_calls"
    prompt_tokens = count_tokens(json.dumps(request.get("messages", [])))
    completion_tokens = count_tokens(json.dumps(message))
    return {
        "id": f"chatcmpl-fake-{int(time.time() * 1000)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served_model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def stream_completion(completion: dict[str, Any]) -> Iterator[str]:
    message = completion["choices"][0]["message"]
    delta = {key: value for key, value in message.items() if value is not None}
    head = {key: completion[key] for key in ("id", "created", "model")}
    chunk = {**head, "object": "chat.completion.chunk"}
    finish = completion["choices"][0]["finish_reason"]
    yield f"data: {json.dumps({**chunk, 'choices': [{'index': 0, 'delta': delta}]})}\n\n"
    last = {"index": 0, "delta": {}, "finish_reason": finish}
    yield f"data: {json.dumps({**chunk, 'choices': [last], 'usage': completion['usage']})}\n\n"
    yield "data: [DONE]\n\n"


def rule_from_reply(value: Any) -> Rule:
    if isinstance(value, Rule):
        return value
    if isinstance(value, str):
        return Rule(text=value)
    return Rule(answer=value)


def rule_from_json(spec: dict[str, Any]) -> Rule:
    spec = dict(spec)
    if spec.get("on_calls") is not None:
        spec["on_calls"] = set(spec["on_calls"])
    if spec.get("tool_calls") is not None:
        spec["tool_calls"] = [tuple(call) for call in spec["tool_calls"]]
    return Rule(**spec)


class FakeLlm:
    """The scripted server; a thread-hosted uvicorn on 127.0.0.1 with a random port."""

    def __init__(
        self,
        rules: list[Rule] | None = None,
        *,
        default: ReplyFn = answer_from_schema,
        served_model: Callable[[str], str] = dated_snapshot,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        record_requests: bool = True,
    ) -> None:
        self.default = default
        # False: `requests` stays empty, for runs of 100k+ calls (benchmarks, memory tests)
        # where keeping every request body would be the largest thing in the process
        self.record_requests = record_requests
        self.served_model = served_model
        self.latency = latency
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.calls = CallCounts()
        self._rules: list[Rule] = list(rules or [])
        self._rule_uses: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.batches = FakeBatches(self.answer_batch_line)  # /v1/files, /v1/batches
        # /v1/messages and /v1/messages/batches, over the same rules and jobs
        self.anthropic = FakeAnthropic(self.batches, self.answer_batch_line)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.handle_chat, methods=["POST"]),
                Route("/chat/completions", self.handle_chat, methods=["POST"]),
                Route("/v1/models", self.handle_models, methods=["GET"]),
                Route("/_fake/calls", self.handle_calls, methods=["GET"]),
                Route("/_fake/reset", self.handle_reset, methods=["POST"]),
                Route("/_fake/script", self.handle_script, methods=["POST"]),
                *self.batches.routes(),
                *self.anthropic.routes(),
            ]
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The server without `/v1`: an Anthropic api_base (the client adds `/v1/messages`)."""
        return f"http://{self.host}:{self.port}"

    def script(self, rules: list[Rule]) -> None:
        """Replace the rules (and their use counts); call counts are kept."""
        with self._lock:
            self._rules = list(rules)
            self._rule_uses = Counter()

    def reset(self) -> None:
        """Forget calls, recorded requests and rule use counts; the script stays."""
        with self._lock:
            self.calls = CallCounts()
            self.requests = []
            self._rule_uses = Counter()

    def pick_rule(self, request: dict[str, Any]) -> tuple[int | None, Rule]:
        with self._lock:
            call_index = self.calls.total
            if call_index == 0:
                self.calls.first_arrival = time.time()
            self.calls.total += 1
            self.calls.by_model[str(request.get("model"))] += 1
            if self.record_requests:
                self.requests.append(request)
            for index, rule in enumerate(self._rules):
                if rule.matches(request, call_index, self._rule_uses[index]):
                    self._rule_uses[index] += 1
                    self.calls.by_rule[index] += 1
                    return index, rule
        return None, rule_from_reply(self.default(request))

    def choose_reply(self, body: dict[str, Any]) -> Rule:
        """The rule that answers this chat request body (counted, recorded), with a computed
        `respond` resolved: the one rule engine behind chat requests and batch lines."""
        _, rule = self.pick_rule(body)
        return rule if rule.respond is None else rule_from_reply(rule.respond(body))

    def reply_payload(self, body: dict[str, Any], rule: Rule) -> dict[str, Any]:
        """The JSON the rule answers with: a chat completion, or an OpenAI error body."""
        if rule.status != 200:
            error = {"message": f"fake error {rule.status}", "type": "fake", "code": rule.status}
            return {"error": error}
        return build_completion(body, rule, self.served_model(str(body.get("model", "fake"))))

    def answer_batch_line(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for one batch line: chat's rules, without their delay."""
        rule = self.choose_reply(body)
        with self._lock:
            self.calls.by_status[rule.status] += 1
        return rule.status, self.reply_payload(body, rule)

    async def handle_chat(self, request: Request) -> Response:
        body = await request.json()
        rule = self.choose_reply(body)
        wait = self.latency + rule.delay
        with self._lock:
            self.calls.in_flight += 1
            self.calls.peak_in_flight = max(self.calls.peak_in_flight, self.calls.in_flight)
        try:
            if wait > 0:
                await asyncio.sleep(wait)
        finally:
            with self._lock:
                self.calls.in_flight -= 1
        with self._lock:
            self.calls.by_status[rule.status] += 1
        payload = self.reply_payload(body, rule)
        if rule.status != 200:
            headers = {} if rule.retry_after is None else {"retry-after": str(rule.retry_after)}
            return JSONResponse(payload, status_code=rule.status, headers=headers)
        if body.get("stream"):
            return StreamingResponse(stream_completion(payload), media_type="text/event-stream")
        return JSONResponse(payload)

    async def handle_models(self, request: Request) -> Response:
        with self._lock:
            names = sorted({rule.model for rule in self._rules if rule.model} | {"fake"})
        models = [{"id": name, "object": "model", "owned_by": "fake"} for name in names]
        return JSONResponse({"object": "list", "data": models})

    async def handle_calls(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse(self.calls.to_json())

    async def handle_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    async def handle_script(self, request: Request) -> Response:
        self.script([rule_from_json(spec) for spec in await request.json()])
        return JSONResponse({"ok": True})

    def start(self) -> FakeLlm:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            backlog=4096,
            timeout_keep_alive=120,  # a pooled client must never meet a connection closing idle
            timeout_graceful_shutdown=1,  # slow scripted replies must not hold up stop()
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake model server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> FakeLlm:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def control(base_url: str, path: str, method: str = "GET") -> dict[str, Any]:
    """Call one of a running fake server's HTTP control endpoints (`path`, e.g.
    "/_fake/calls") from outside its process, given its base url (".../v1"); its JSON reply.
    urllib.error.URLError when the server does not answer within 30 s."""
    root = base_url.removesuffix("/v1")
    body = b"" if method == "POST" else None
    request = urllib.request.Request(root + path, method=method, data=body)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def run_fake_llm_process(latency: float = 0.0, rules: str | None = None) -> Iterator[str]:
    """The fake server in its own process (own GIL), for benchmarks; yields its base url.
    `rules` ("module:function", importable from the repository root) names a function
    returning the script (callables allowed: it runs in that process)."""
    command = [sys.executable, os.path.abspath(__file__), "--latency", str(latency)]
    command += ["--rules", rules] if rules else []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError(f"fake model server process did not start: {base_url!r}")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_forever(latency: float, port: int, rules: str | None = None) -> None:
    script: list[Rule] = []
    if rules:
        import importlib

        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        # the script's Rule must be this module's class, not a second import of this file
        sys.modules.setdefault("tests.fake_llm", sys.modules[__name__])
        module, function = rules.split(":")
        script = getattr(importlib.import_module(module), function)()
    server = FakeLlm(script, latency=latency, port=port, record_requests=False).start()
    print(server.base_url, flush=True)
    stop = threading.Event()
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
    server.stop()


@pytest.fixture
def fake_llm() -> Iterator[FakeLlm]:
    """A started FakeLlm with an empty script (the schema-following default answers)."""
    with FakeLlm() as server:
        yield server


def models_config_for(
    server: FakeLlm | str,
    *,
    generators: tuple[str, ...] = ("gen-a", "gen-b"),
    teachers: tuple[str, ...] = ("teacher-a",),
    judge: tuple[str, ...] = ("judge-a",),
    fallbacks: dict[str, list[str]] | None = None,
    **deployment_fields: Any,
) -> Any:
    """A `ModelsConfig` whose every deployment points at this fake server (a FakeLlm or url)."""
    from toucan.config import ModelDeployment, ModelsConfig

    base_url = server.base_url if isinstance(server, FakeLlm) else server

    def deployments(names: tuple[str, ...]) -> list[ModelDeployment]:
        return [
            ModelDeployment(
                name=name, model=f"openai/{name}", api_base=base_url, **deployment_fields
            )
            for name in names
        ]

    return ModelsConfig(
        generators=deployments(generators),
        teachers=deployments(teachers),
        judge=deployments(judge),
        fallbacks=fallbacks or {},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible model server")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rules", help="module:function returning the script")
    arguments = parser.parse_args()
    serve_forever(arguments.latency, arguments.port, arguments.rules)
