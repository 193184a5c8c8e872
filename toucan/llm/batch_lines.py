"""Batch request lines out, result lines back (pure functions).

A request line carries exactly the body the online path posts (`LlmRouter.build_request`, plus
the provider's model id), so structured output, parameters and model mapping cannot drift
apart. A result line is read into a `LineResult`: the chat completion (turned into an LlmReply by
the online path's own `to_reply_from_json`; an Anthropic line, read by
toucan/llm/batch_anthropic.py, carries its Message), or a reason token:

    batch_request_failed   the provider answered the line with an error (non-200, or an error
                           object other than the ones below)
    batch_malformed_line   the line, or its completion, cannot be read
    batch_output_missing   the job ended but its output file cannot be had
    batch_missing_result   the job ended and neither file names the line
    batch_expired          unfinished: the job expired first        } sent again (runner), up
    batch_cancelled        unfinished: the job was cancelled first  } to `max_resubmits`
    batch_failed           unfinished: the job failed validation    }

Line shapes: OpenAI API reference, "The request input object" (`custom_id`, `method`, `url`,
`body`) and "The request output object" (`id`, `custom_id`, `response` {`status_code`,
`request_id`, `body`}, `error` {`code`, `message`}); the Batch API guide names the error codes
of requests a job never ran (`batch_expired`, `batch_cancelled`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from toucan.ids import make_id

if TYPE_CHECKING:
    from toucan.llm.batch_api import BatchState, ResultFiles

CHAT_URL = "/v1/chat/completions"  # the `url` of every request line and the job's `endpoint`

NOT_RUN = {"batch_expired": "batch_expired", "batch_cancelled": "batch_cancelled"}
UNFINISHED_BY_STATUS = {
    "expired": "batch_expired",
    "cancelled": "batch_cancelled",
    "failed": "batch_failed",
}
CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"([^"\\]+)"')
DETAIL_CHARS = 500


class LineResult(BaseModel):
    """One request line's fate in an ended job."""

    custom_id: str
    body: dict[str, Any] | None = None  # the chat completion, when it succeeded
    reason: str | None = None  # a token (module docstring) when it did not
    detail: str = ""
    unfinished: bool = False  # never ran (expired, cancelled, failed job): may be sent again


def make_custom_id(item_id: str, request_key: str) -> str:
    """The line's id: one per (item, request), the same in every job that carries it."""
    return make_id("req", item_id, request_key)


def build_line(custom_id: str, model: str, request: dict[str, Any]) -> dict[str, Any]:
    """A request line around the online request body (`LlmRouter.build_request`)."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT_URL,
        "body": {"model": model, **request},
    }


def encode_line(line: dict[str, Any]) -> bytes:
    """One JSONL line, newline included."""
    return orjson.dumps(line) + b"\n"


def read_result_line(value: Any) -> LineResult | None:
    """One decoded result line; None when it names no custom id."""
    if not isinstance(value, dict) or not isinstance(value.get("custom_id"), str):
        return None
    custom_id = value["custom_id"]
    error = value.get("error")
    response = value.get("response")
    if isinstance(error, dict) and error:
        code = str(error.get("code") or "")
        detail = f"{code}: {error.get('message') or ''}"[:DETAIL_CHARS]
        if code in NOT_RUN:
            return LineResult(
                custom_id=custom_id, reason=NOT_RUN[code], detail=detail, unfinished=True
            )
        return LineResult(custom_id=custom_id, reason="batch_request_failed", detail=detail)
    if not isinstance(response, dict):
        return LineResult(custom_id=custom_id, reason="batch_malformed_line", detail="no response")
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, dict) and body.get("choices"):
        return LineResult(custom_id=custom_id, body=body)
    if status == 200:
        detail = f"not a chat completion: {str(body)[:200]}"
        return LineResult(custom_id=custom_id, reason="batch_malformed_line", detail=detail)
    message = ((body or {}).get("error") or {}) if isinstance(body, dict) else {}
    detail = f"HTTP {status}: {message.get('message') if isinstance(message, dict) else body}"
    return LineResult(
        custom_id=custom_id, reason="batch_request_failed", detail=detail[:DETAIL_CHARS]
    )


LineReader = Callable[[Any], "LineResult | None"]


def read_result_file(
    raw: bytes | None, read_line: LineReader = read_result_line
) -> tuple[dict[str, LineResult], int]:
    """Results by custom id from one output or error file (each decoded line read by
    `read_line`: the provider's line shape), and how many lines named no custom id that could
    be read (a broken line is pinned to its item when its `custom_id` is still legible)."""
    results: dict[str, LineResult] = {}
    unattributed = 0
    for raw_line in (raw or b"").splitlines():
        if not raw_line.strip():
            continue
        try:
            result = read_line(orjson.loads(raw_line))
        except orjson.JSONDecodeError:
            result = None
        if result is None:
            legible = CUSTOM_ID.search(raw_line)
            if legible is None:
                unattributed += 1
                continue
            detail = raw_line[:200].decode("utf-8", "replace")
            result = LineResult(
                custom_id=legible.group(1).decode(), reason="batch_malformed_line", detail=detail
            )
        results.setdefault(result.custom_id, result)
    return results, unattributed


def settle_lines(
    custom_ids: list[str],
    state: BatchState,
    files: ResultFiles,
    read_line: LineReader = read_result_line,
) -> dict[str, LineResult]:
    """Every line of an ended job with its result. A line neither file names is unfinished
    when the job expired, was cancelled or failed; otherwise it is lost to a missing output
    file, to lines that could not be read, or (neither) simply missing."""
    output, broken_output = read_result_file(files.output, read_line)
    errors, broken_errors = read_result_file(files.errors, read_line)
    job_detail = "; ".join(
        f"{error.get('code')}: {error.get('message')}" for error in state.errors
    )[:DETAIL_CHARS]
    settled: dict[str, LineResult] = {}
    for custom_id in custom_ids:
        found = output.get(custom_id) or errors.get(custom_id)
        if found is not None:
            settled[custom_id] = found
        elif state.status in UNFINISHED_BY_STATUS:
            reason = UNFINISHED_BY_STATUS[state.status]
            settled[custom_id] = LineResult(
                custom_id=custom_id, reason=reason, detail=job_detail, unfinished=True
            )
        elif files.output_missing:
            detail = f"output file {state.output_file_id or '(none)'} cannot be downloaded"
            settled[custom_id] = LineResult(
                custom_id=custom_id, reason="batch_output_missing", detail=detail
            )
        elif broken_output or broken_errors:
            detail = f"{broken_output + broken_errors} result lines could not be read"
            settled[custom_id] = LineResult(
                custom_id=custom_id, reason="batch_malformed_line", detail=detail
            )
        else:
            settled[custom_id] = LineResult(
                custom_id=custom_id, reason="batch_missing_result", detail="in no result file"
            )
    return settled
