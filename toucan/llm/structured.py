"""Structured output: ask for JSON by schema, parse leniently, one bounded repair, then give up.

The reply is cached only once it parsed, so a re-run pays again for what failed and never for
what succeeded. Giving up raises UnparseableReply carrying the raw text: the stage turns it into
an error row with reason `unparseable_reply`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from toucan.errors import UnparseableReply
from toucan.llm.parsing import describe_parse_error, parse_reply_into, response_format_for
from toucan.llm.replies import CallMeta, LlmReply, LlmRequest

if TYPE_CHECKING:
    from toucan.llm.router import LlmRouter

T = TypeVar("T", bound=BaseModel)
REPAIR_ATTEMPTS = 1


def build_repair_messages(
    messages: list[dict[str, Any]], reply_text: str, problem: str, schema: type[BaseModel]
) -> list[dict[str, Any]]:
    """The conversation so far plus the failed reply and what was wrong with it."""
    schema_text = json.dumps(schema.model_json_schema(), separators=(",", ":"))
    instruction = (
        f"{problem}\nReply again with only one JSON object, no prose and no code fence, "
        f"that matches this JSON schema:\n{schema_text}"
    )
    return [
        *messages,
        {"role": "assistant", "content": reply_text},
        {"role": "user", "content": instruction},
    ]


def try_parse(reply: LlmReply, schema: type[T]) -> tuple[T | None, str]:
    """(record, "") when the reply parses, else (None, what was wrong)."""
    try:
        return parse_reply_into(reply.text, schema), ""
    except (ValueError, ValidationError) as error:
        return None, describe_parse_error(error)


async def complete_structured(
    router: LlmRouter,
    target: str,
    messages: list[dict[str, Any]],
    schema: type[T],
    *,
    params: dict[str, Any] | None = None,
    meta: CallMeta | None = None,
    repair_attempts: int = REPAIR_ATTEMPTS,
    use_cache: bool = True,
    response_format: dict[str, Any] | None = None,
) -> tuple[T, LlmReply]:
    """The reply parsed into `schema`, and the reply it came from.

    `response_format` overrides the one derived from `schema` (e.g. a per-item JSON schema
    with enums for constrained decoding, while parsing stays with the static `schema`).
    Raises UnparseableReply (with `.raw`) after the repair attempts, or the router's LlmError.
    """
    meta = meta or CallMeta()
    response_format = response_format or response_format_for(schema)
    request = LlmRequest(messages, None, response_format, params)
    if use_cache and (cached := router.find_cached(target, request, meta=meta)) is not None:
        record, _ = try_parse(cached, schema)
        if record is not None:
            return record, cached
    reply = await router.complete(
        target,
        messages,
        response_format=response_format,
        params=params,
        meta=meta,
        use_cache=False,
    )
    return await parse_or_repair(
        router,
        messages,
        reply,
        schema,
        response_format=response_format,
        params=params,
        meta=meta,
        repair_attempts=repair_attempts,
        use_cache=use_cache,
    )


async def parse_or_repair(
    router: LlmRouter,
    messages: list[dict[str, Any]],
    reply: LlmReply,
    schema: type[T],
    *,
    response_format: dict[str, Any],
    params: dict[str, Any] | None = None,
    meta: CallMeta | None = None,
    repair_attempts: int = REPAIR_ATTEMPTS,
    use_cache: bool = True,
) -> tuple[T, LlmReply]:
    """`reply` to `messages` (an online call's, or a provider batch job's) parsed into
    `schema`; when it does not parse, the repair turns are asked online of the deployment that
    answered. Cached under the original request once parsed. Raises UnparseableReply (with
    `.raw`) after the repair attempts, or the router's LlmError."""
    meta = meta or CallMeta()
    record, problem = try_parse(reply, schema)
    conversation = messages
    for _ in range(repair_attempts):
        if record is not None:
            break
        conversation = build_repair_messages(conversation, reply.text, problem, schema)
        reply = await router.complete(
            reply.deployment,
            conversation,
            response_format=response_format,
            params=params,
            meta=meta,
            use_cache=False,
        )
        record, problem = try_parse(reply, schema)
    if record is None:
        raise UnparseableReply(f"{reply.deployment}: {problem}", raw=reply.text)
    if use_cache:
        router.store_cached(reply, LlmRequest(messages, None, response_format, params))
    return record, reply
