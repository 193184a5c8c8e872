"""Anthropic Message Batches over HTTP, behind the same interface as `OpenAiBatchApi`.

Shapes: Anthropic API reference, "Message Batches" (create, retrieve, list, cancel, results):

    POST /v1/messages/batches              {"requests": [{"custom_id", "params"}]} -> MessageBatch
    GET  /v1/messages/batches/{id}         POST /v1/messages/batches/{id}/cancel
    GET  /v1/messages/batches?limit=&after_id=     newest first, {data, has_more, last_id}
    GET  {results_url}                     JSONL: {"custom_id", "result": {"type": succeeded |
                                           errored | canceled | expired, "message" | "error"}}

A MessageBatch has `processing_status` in_progress | canceling | ended and `request_counts`
(processing, succeeded, errored, canceled, expired). It is read here in the OpenAI Batch object's
terms (`BatchState`), so that `JobDriver` and `BatchRunner` drive both providers alike: ended
after a cancel = `cancelled`, ended with expired requests = `expired`, otherwise `completed`.
Limits: 100,000 requests or 256 MB per batch, custom_id ^[a-zA-Z0-9_-]{1,64}$ (toucan's
`req_<hex>` ids fit), a 24 h processing window, results kept 29 days after creation (a results
download that 404s is `batch_output_missing`).

Why not LiteLLM: its Anthropic batch support retrieves a batch and downloads results but does
not create, cancel or list one (litellm 1.110.2 `AnthropicBatchesConfig`), and the Anthropic SDK
is not a dependency; the five calls share the direct transport's session, error classes and
retry rules instead. The lines' params and the replies are converted by LiteLLM's own Anthropic
transformation (toucan/llm/anthropic_format.py).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import orjson

from toucan.config import ModelDeployment
from toucan.llm.anthropic_format import to_messages_params, to_reply_from_message
from toucan.llm.batch_api import (
    FIND_SLACK_S,
    UPLOAD_TIMEOUT_S,
    BatchState,
    ListedPages,
    ResultFiles,
    listed_newest_first,
)
from toucan.llm.batch_lines import DETAIL_CHARS, LineResult
from toucan.llm.deployments import deployment_api_key
from toucan.llm.direct import DirectTransport, decode_json
from toucan.llm.errors import HttpStatusError
from toucan.llm.replies import LlmReply
from toucan.records import BatchJob

ANTHROPIC_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"  # the `anthropic-version` every request names
NOT_RUN = {"expired": "batch_expired", "canceled": "batch_cancelled"}


def read_message_batch(data: dict[str, Any]) -> BatchState:
    """A MessageBatch as a BatchState (module docstring); `output_file_id` holds the results
    url once there is one."""
    counts = data.get("request_counts") or {}
    processing = str(data.get("processing_status") or "in_progress")
    status = {"in_progress": "in_progress", "canceling": "cancelling"}.get(processing)
    if status is None:  # ended
        if data.get("cancel_initiated_at"):
            status = "cancelled"
        elif counts.get("expired"):
            status = "expired"
        else:
            status = "completed"
    return BatchState(
        job_id=str(data["id"]),
        status=status,
        output_file_id=data.get("results_url"),
        total=sum(
            int(counts.get(key) or 0) for key in (*NOT_RUN, "processing", "succeeded", "errored")
        ),
        completed=int(counts.get("succeeded") or 0),
        failed=int(counts.get("errored") or 0),
        created_at=rfc3339_seconds(data.get("created_at")),
    )


def rfc3339_seconds(stamp: Any) -> int:
    """An RFC 3339 time as unix seconds; 0 when absent or unreadable."""
    if not isinstance(stamp, str):
        return 0
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def read_result_line(value: Any) -> LineResult | None:
    """One decoded results line; None when it names no custom id. A succeeded line's body is
    the Anthropic Message (turned into an LlmReply by `AnthropicBatchApi.to_reply`)."""
    if not isinstance(value, dict) or not isinstance(value.get("custom_id"), str):
        return None
    custom_id = value["custom_id"]
    result = value.get("result")
    kind = result.get("type") if isinstance(result, dict) else None
    if kind == "succeeded":
        message = result.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            return LineResult(custom_id=custom_id, body=message)
        detail = f"not a message: {str(message)[:200]}"
        return LineResult(custom_id=custom_id, reason="batch_malformed_line", detail=detail)
    if kind in NOT_RUN:
        reason = NOT_RUN[kind]
        return LineResult(custom_id=custom_id, reason=reason, detail=kind, unfinished=True)
    if kind == "errored":
        error = result.get("error") or {}
        inner = (
            error.get("error") if isinstance(error.get("error"), dict) else error
        )  # ErrorResponse
        detail = f"{inner.get('type')}: {inner.get('message')}"[:DETAIL_CHARS]
        return LineResult(custom_id=custom_id, reason="batch_request_failed", detail=detail)
    detail = f"unknown result: {str(result)[:200]}"
    return LineResult(custom_id=custom_id, reason="batch_malformed_line", detail=detail)


# `GET /v1/messages/batches`: pages of 1-1000 batches; 5 pages back is far more than a run submits
ANTHROPIC_LIST = ListedPages(path="", page_size=1000, pages_max=5, cursor="after_id")


class AnthropicBatchApi:
    """One Anthropic deployment's Message Batches: its API root, key and model id."""

    provider = "anthropic"
    read_line = staticmethod(read_result_line)

    def __init__(self, transport: DirectTransport, deployment: ModelDeployment, model: str) -> None:
        """`model`: the provider's model id (LiteLLM's `anthropic/` prefix stripped)."""
        self.transport = transport
        self.model = model
        self.max_retries = deployment.max_retries
        self.timeout_s = deployment.timeout_s
        self.base = (deployment.api_base or ANTHROPIC_BASE).rstrip("/").removesuffix("/v1")
        self.headers = {"anthropic-version": API_VERSION}
        self.betas: set[str] = set()  # `anthropic-beta` features the lines built so far need
        # as online through LiteLLM: the configured key, else ANTHROPIC_API_KEY
        if key := deployment_api_key(deployment) or os.environ.get("ANTHROPIC_API_KEY"):
            self.headers["x-api-key"] = key

    async def call(self, method: str, url: str, **request: Any) -> bytes:
        """One request (`url` below the API root, or absolute); the direct transport's errors."""
        timeout_s = request.pop("timeout_s", self.timeout_s)
        headers = {**self.headers, **request.pop("headers", {})}
        if not url.startswith("http"):
            url = f"{self.base}/v1/messages/batches{url}"
        return await self.transport.send(
            method, url, headers=headers, timeout_s=timeout_s, **request
        )

    def build_line(self, custom_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """A batch request around the online request body, converted to Messages params (the
        beta features they need are asked for on every batch this api creates)."""
        params, betas = to_messages_params(self.model, request)
        self.betas |= betas
        return {"custom_id": custom_id, "params": params}

    async def submit(self, job_key: str, lines: bytes) -> BatchState:
        """Create the batch from the JSONL request lines (spliced into one JSON body). A Message
        Batch has no metadata: `find` recognises it by its time and size instead."""
        requests = b",".join(line for line in lines.splitlines() if line.strip())
        body = b'{"requests":[' + requests + b"]}"
        headers = {"content-type": "application/json"}
        if self.betas:
            headers["anthropic-beta"] = ",".join(sorted(self.betas))
        raw = await self.call("POST", "", data=body, timeout_s=UPLOAD_TIMEOUT_S, headers=headers)
        return read_message_batch(decode_json(raw))

    async def retrieve(self, job_id: str) -> BatchState:
        return read_message_batch(decode_json(await self.call("GET", f"/{job_id}")))

    async def cancel(self, job_id: str) -> BatchState:
        """Ask Anthropic to stop the batch; it ends with the answers it has."""
        return read_message_batch(decode_json(await self.call("POST", f"/{job_id}/cancel")))

    async def find(self, job: BatchJob, taken: set[str]) -> BatchState | None:
        """The batch created for `job` by a run that died before it stored the id: the one
        batch, not `taken` by another recorded job, created while the job was being submitted
        with the job's number of requests. None when there is none, or more than one."""
        start = job.submitted_at.replace(tzinfo=UTC).timestamp()  # the store keeps naive UTC
        end = start + UPLOAD_TIMEOUT_S + FIND_SLACK_S
        matches: list[BatchState] = []
        async for state in listed_newest_first(
            self.call, ANTHROPIC_LIST, read_message_batch, start
        ):
            in_window = start - FIND_SLACK_S <= state.created_at <= end
            if in_window and state.total == job.request_count and state.job_id not in taken:
                matches.append(state)
        return matches[0] if len(matches) == 1 else None

    async def results(self, state: BatchState) -> ResultFiles:
        """The ended batch's results. A results url that 404s (past the 29 days, or never
        written), or none although the batch counts answered requests, is `output_missing`."""
        output: bytes | None = None
        if state.output_file_id:
            try:
                output = await self.call("GET", state.output_file_id, timeout_s=UPLOAD_TIMEOUT_S)
            except HttpStatusError as error:
                if error.status_code != 404:
                    raise
        answered = state.completed + state.failed > 0
        return ResultFiles(output=output, output_missing=output is None and answered)

    def to_reply(
        self, body: dict[str, Any], encoded: bytes, deployment: str, model: str, latency_ms: float
    ) -> LlmReply:
        """A succeeded line's Message as the online path's LlmReply; `encoded` is the request
        line when this run built it (b"" when only the store knows the job)."""
        params = orjson.loads(encoded).get("params") if encoded else None
        return to_reply_from_message(body, params, deployment, model, latency_ms)
