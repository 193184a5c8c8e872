"""The Anthropic Messages API and Message Batches of the fake model server, over real HTTP.

Shapes follow the Anthropic API reference ("Messages", "Message Batches"):

    POST /v1/messages                      Messages params -> Message
    POST /v1/messages/batches              {"requests": [{custom_id, params}]} -> MessageBatch
    GET  /v1/messages/batches/{id}         POST /v1/messages/batches/{id}/cancel
    GET  /v1/messages/batches?limit=&after_id=      GET /v1/messages/batches/{id}/results

Every request needs `x-api-key` and `anthropic-version` (401 / 400 otherwise), and
`output_format` needs its `anthropic-beta` feature; a batch is refused (400) without requests, with more than 100,000 or 256 MB of them, a custom_id off the
pattern ^[a-zA-Z0-9_-]{1,64}$ or repeated, or params without `max_tokens`. Params are read back
into the OpenAI chat request the fake's rules answer (system prompt, text blocks, a forced
`json_tool_call` tool or `output_format` as `response_format`, other tools), and the chat
completion written as an Anthropic Message (JSON content as that tool's input when it was
forced). Written by hand, not with LiteLLM: toucan converts with LiteLLM, the fake checks it.

Jobs are the OpenAI fake's (tests/fake_llm_batches.py: the same plans, counts, release gates),
seen through Anthropic's eyes: `processing_status` in_progress | canceling | ended,
`request_counts`, `results_url` once ended; results lines are `{custom_id, result: {type:
succeeded | errored | canceled | expired, message | error}}`, in reverse order. A plan's
`malformed_lines` cuts the first succeeded lines in half, `missing_output` makes the results
url 404, outcome `expired` ends the batch with its unanswered requests `expired`.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

try:
    from tests.fake_llm_batches import TERMINAL, FakeBatches, FakeJob, LineAnswer
except ModuleNotFoundError:  # run as a script (tests/fake_llm.py): tests/ itself is on the path
    from fake_llm_batches import TERMINAL, FakeBatches, FakeJob, LineAnswer  # type: ignore[no-redef]

JSON_TOOL = "json_tool_call"  # LiteLLM's forced tool for a response_format
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
NOT_RUN = {"expired": "expired", "cancelled": "canceled"}


def anthropic_error(kind: str, message: str, status: int) -> JSONResponse:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status)


def refused(request: Request) -> JSONResponse | None:
    """The error for a request without the headers every Anthropic call needs."""
    if not request.headers.get("x-api-key"):
        return anthropic_error("authentication_error", "x-api-key header is required", 401)
    if not request.headers.get("anthropic-version"):
        return anthropic_error("invalid_request_error", "anthropic-version is required", 400)
    return None


def missing_beta(request: Request, params: dict[str, Any]) -> JSONResponse | None:
    """The error for native structured output (`output_format`) asked for without its
    `anthropic-beta` feature (`structured-outputs-...`)."""
    if "output_format" in params and "structured-outputs" not in request.headers.get(
        "anthropic-beta", ""
    ):
        return anthropic_error("invalid_request_error", "output_format: needs the beta header", 400)
    return None


def text_of(content: Any) -> str:
    """A system prompt or message content (a string or text blocks) as plain text."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if block.get("type") == "text")


def chat_body(params: dict[str, Any]) -> dict[str, Any]:
    """Messages params as the OpenAI chat request the fake's rules answer."""
    messages = (
        [{"role": "system", "content": text_of(params["system"])}] if params.get("system") else []
    )
    messages += [{"role": m["role"], "content": text_of(m["content"])} for m in params["messages"]]
    body: dict[str, Any] = {"model": params["model"], "messages": messages}
    body.update(
        {key: params[key] for key in ("max_tokens", "temperature", "top_p") if key in params}
    )
    tools = params.get("tools") or []
    forced = next((tool for tool in tools if tool.get("name") == JSON_TOOL), None)
    schema = forced["input_schema"] if forced else (params.get("output_format") or {}).get("schema")
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema},
        }
    functions = [
        {"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                          "parameters": t.get("input_schema", {})}}
        for t in tools if t.get("name") != JSON_TOOL
    ]  # fmt: skip
    if functions:
        body["tools"] = functions
    return body


def anthropic_message(completion: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as an Anthropic Message: JSON content becomes the forced tool's input."""
    message = completion["choices"][0]["message"]
    forced = any(tool.get("name") == JSON_TOOL for tool in params.get("tools") or [])
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if forced and text is not None:
        try:
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_json",
                    "name": JSON_TOOL,
                    "input": json.loads(text),
                }
            )
        except json.JSONDecodeError:  # a model that ignored the forced tool
            content.append({"type": "text", "text": text})
    elif text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        arguments = json.loads(call["function"]["arguments"] or "{}")
        content.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": call["function"]["name"],
                "input": arguments,
            }
        )
    used_tool = any(block["type"] == "tool_use" for block in content)
    usage = completion["usage"]
    return {
        "id": f"msg_fake{int(time.time() * 1000)}",
        "type": "message",
        "role": "assistant",
        "model": completion["model"],
        "content": content,
        "stop_reason": "tool_use" if used_tool else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
        },
    }


def rfc3339(unix: int | None) -> str | None:
    return (
        None
        if unix is None
        else datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")
    )


def check_requests(requests: Any) -> str | None:
    """Why a batch's requests are refused; None when they are fine."""
    if not isinstance(requests, list) or not 1 <= len(requests) <= MAX_REQUESTS:
        return f"requests: between 1 and {MAX_REQUESTS} items"
    seen: set[str] = set()
    for request in requests:
        custom_id = request.get("custom_id") if isinstance(request, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id) or custom_id in seen:
            return f"custom_id {custom_id!r}: missing, repeated or not ^[a-zA-Z0-9_-]{{1,64}}$"
        seen.add(custom_id)
        params = request.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("max_tokens"), int):
            return f"{custom_id}: params.max_tokens is required"
        if not isinstance(params.get("messages"), list) or not params.get("model"):
            return f"{custom_id}: params.model and params.messages are required"
    return None


class FakeAnthropic:
    """Messages and Message Batches over one FakeLlm's rules and batch jobs."""

    def __init__(self, batches: FakeBatches, answer_line: LineAnswer) -> None:
        self.batches = batches
        self.answer_line = answer_line
        self.params: dict[str, dict[str, Any]] = {}  # custom_id -> params, for the replies

    def routes(self) -> list[Route]:
        root = "/v1/messages"
        return [
            Route(root, self.handle_message, methods=["POST"]),
            Route(f"{root}/batches", self.handle_create, methods=["POST"]),
            Route(f"{root}/batches", self.handle_list, methods=["GET"]),
            Route(f"{root}/batches/{{batch_id}}", self.handle_retrieve, methods=["GET"]),
            Route(f"{root}/batches/{{batch_id}}/cancel", self.handle_cancel, methods=["POST"]),
            Route(f"{root}/batches/{{batch_id}}/results", self.handle_results, methods=["GET"]),
        ]

    def answer(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, a Message or an Anthropic error body) by the chat rules."""
        status, payload = self.answer_line(chat_body(params))
        if status != 200:
            return status, {
                "type": "error",
                "error": {"type": "api_error", "message": str(payload)},
            }
        return status, anthropic_message(payload, params)

    async def handle_message(self, request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        params = await request.json()
        if (error := missing_beta(request, params)) is not None:
            return error
        if not isinstance(params.get("max_tokens"), int):
            return anthropic_error("invalid_request_error", "max_tokens: Field required", 400)
        status, payload = self.answer(params)
        return JSONResponse(payload, status_code=status)

    async def handle_create(self, request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            return anthropic_error("request_too_large", "a batch is at most 256 MB", 413)
        requests = json.loads(raw).get("requests")
        if (problem := check_requests(requests)) is not None:
            return anthropic_error("invalid_request_error", problem, 400)
        for one in requests:
            if (error := missing_beta(request, one["params"])) is not None:
                return error
        for one in requests:
            self.params[one["custom_id"]] = one["params"]
        lines = [{"custom_id": r["custom_id"], "body": chat_body(r["params"])} for r in requests]
        job = self.batches.create_job({}, "/v1/messages", lines, {}, provider="anthropic")
        await self.batches.hold_create(job)
        return JSONResponse(self.view(job, request))

    async def handle_retrieve(self, request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        job = self.own(self.batches.retrieve(request.path_params["batch_id"]))
        return JSONResponse(self.view(job, request)) if job else self.not_found()

    async def handle_cancel(self, request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        job = self.own(self.batches.cancel(request.path_params["batch_id"]))
        return JSONResponse(self.view(job, request)) if job else self.not_found()

    async def handle_list(self, request: Request) -> Response:
        """Newest first, paged by `after_id` and `limit` (1-1000, default 20)."""
        if (error := refused(request)) is not None:
            return error
        limit = max(1, min(1000, int(request.query_params.get("limit", 20))))
        page, has_more = self.batches.list_page(
            "anthropic", request.query_params.get("after_id"), limit
        )
        data = [self.view(job, request) for job in page]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return JSONResponse(
            {"data": data, "has_more": has_more, "first_id": first, "last_id": last}
        )

    async def handle_results(self, request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        job = self.own(self.batches.job(request.path_params["batch_id"]))
        if job is None or job.plan.missing_output:
            return self.not_found()
        if job.batch["status"] not in TERMINAL:
            return anthropic_error("invalid_request_error", "batch is still processing", 400)
        return Response(self.results_text(job), media_type="application/x-jsonl")

    def results_text(self, job: FakeJob) -> str:
        status = job.batch["status"]
        succeeded: list[str] = []
        others: list[str] = []
        for outcome in job.outcomes:
            line: dict[str, Any] = {"custom_id": outcome.custom_id}
            if outcome.status_code is None:
                line["result"] = {"type": NOT_RUN.get(status, "canceled")}
            elif outcome.status_code == 200 and outcome.payload is not None:
                params = self.params[outcome.custom_id]
                message = anthropic_message(outcome.payload, params)
                succeeded.append(
                    json.dumps({**line, "result": {"type": "succeeded", "message": message}})
                )
                continue
            else:
                error = {
                    "type": "error",
                    "error": {"type": "api_error", "message": str(outcome.payload)},
                }
                line["result"] = {"type": "errored", "error": error}
            others.append(json.dumps(line))
        return self.batches.result_text(succeeded, job.plan.malformed_lines) + "".join(
            f"{line}\n" for line in others
        )

    def view(self, job: FakeJob, request: Request) -> dict[str, Any]:
        """The job as a MessageBatch."""
        batch = job.batch
        status = batch["status"]
        ended = status in TERMINAL
        outcomes = job.outcomes
        counts = {
            "processing": 0 if ended else len(job.lines),
            "succeeded": sum(o.status_code == 200 for o in outcomes),
            "errored": sum(o.status_code not in (None, 200) for o in outcomes),
            "canceled": sum(o.status_code is None for o in outcomes)
            if status == "cancelled"
            else 0,
            "expired": sum(o.status_code is None for o in outcomes) if status != "cancelled" else 0,
        }
        ended_at = next(
            (
                batch.get(f"{s}_at")
                for s in ("completed", "expired", "cancelled", "failed")
                if batch.get(f"{s}_at")
            ),
            None,
        )
        results_url = (
            f"{str(request.base_url).rstrip('/')}/v1/messages/batches/{batch['id']}/results"
        )
        return {
            "id": batch["id"],
            "type": "message_batch",
            "processing_status": "ended"
            if ended
            else ("canceling" if status == "cancelling" else "in_progress"),
            "request_counts": counts,
            "created_at": rfc3339(batch["created_at"]),
            "expires_at": rfc3339(batch["expires_at"]),
            "ended_at": rfc3339(ended_at),
            "archived_at": None,
            "cancel_initiated_at": rfc3339(batch.get("cancelling_at")),
            "results_url": results_url if ended else None,
        }

    @staticmethod
    def own(job: FakeJob | None) -> FakeJob | None:
        return job if job is not None and job.provider == "anthropic" else None

    @staticmethod
    def not_found() -> JSONResponse:
        return anthropic_error("not_found_error", "No such Message Batch", 404)
