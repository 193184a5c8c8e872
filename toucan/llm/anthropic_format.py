"""OpenAI chat requests as Anthropic Messages params, and Anthropic messages as our LlmReply.

A Message Batch line carries Messages API params (Anthropic API reference, "Create a Message
Batch": `requests[].params`), not the OpenAI chat body toucan builds. Both directions go through
LiteLLM's own Anthropic transformation (`AnthropicConfig`: `get_optional_params` ->
`transform_request`, and `transform_parsed_response`), the code that converts the same request
when the deployment is asked online through LiteLLM's Router. Hand-written conversion would
be a second copy of rules that are not small (the system prompt hoisted out of the messages,
`max_tokens` required and defaulted per model, tools and tool_choice renamed and reshaped,
`response_format` as a forced `json_tool_call` tool or as native `output_format` depending on
the model, and that tool's input turned back into the reply's text) and would drift from the
online path, so an item could parse in one mode and not the other.
"""

from __future__ import annotations

from typing import Any

import httpx

from toucan.errors import ConfigError
from toucan.llm.deployments import to_reply
from toucan.llm.providers import load_litellm
from toucan.llm.replies import LlmReply


def to_messages_params(model: str, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """(the Messages API params, with `model`, for an OpenAI chat request body without `model`
    (`LlmRouter.build_request`); the `anthropic-beta` features they need, as LiteLLM asks for
    them online, e.g. native `output_format`). Raises ConfigError for a request whose tool names
    LiteLLM would have to rename (the reply could not be mapped back once the process that
    sent it is gone; toucan/llm/tool_rules.py keeps Anthropic tool names valid)."""
    litellm = load_litellm()
    from litellm.llms.anthropic.chat.transformation import (
        ANTHROPIC_TOOL_NAME_REVERSE_MAP_KEY,
        AnthropicConfig,
    )

    messages = request["messages"]
    openai_params = {key: value for key, value in request.items() if key != "messages"}
    optional = litellm.utils.get_optional_params(
        model=model,
        custom_llm_provider="anthropic",
        messages=messages,
        drop_params=True,
        **openai_params,
    )
    optional.pop("json_mode", None)  # LiteLLM's own flag, not a Messages param
    optional.pop("stream", None)
    litellm_params: dict[str, Any] = {"drop_params": True}
    config = AnthropicConfig()
    params = config.transform_request(model, messages, optional, litellm_params, {})
    if litellm_params.get(ANTHROPIC_TOOL_NAME_REVERSE_MAP_KEY):
        raise ConfigError(f"{model}: tool names Anthropic does not accept cannot go in a batch")
    headers = config.update_headers_with_optional_anthropic_beta({}, params, messages)
    betas = {beta.strip() for beta in str(headers.get("anthropic-beta") or "").split(",")}
    return {**params, "model": model}, betas - {""}


def to_reply_from_message(
    message: dict[str, Any],
    params: dict[str, Any] | None,
    deployment: str,
    model: str,
    latency_ms: float,
) -> LlmReply:
    """An Anthropic Message (a batch line's `result.message`) as the LlmReply the online path
    makes of it. `params` are the line's Messages params when known: a `response_format` sent
    as LiteLLM's forced `json_tool_call` tool comes back as that tool's input, which becomes
    the reply's text as online. Unknown params (a job read back from the store alone): a reply
    calling only that tool is read the same way, without the schema's envelope rules. Raises
    ValueError (or KeyError) when the message is not one."""
    load_litellm()
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig, JsonModeRequest
    from litellm.types.utils import ModelResponse

    if params is not None:
        schema = JsonModeRequest(tools=params.get("tools")).tool_schema()
        json_mode = schema is not None
    else:
        schema = None
        json_mode = is_json_tool_reply(message)
    response = AnthropicConfig().transform_parsed_response(
        completion_response=message,
        raw_response=httpx.Response(200),  # read for its headers only
        model_response=ModelResponse(),
        json_mode=json_mode,
        response_format_schema=schema,
    )
    return to_reply(response, deployment, model, latency_ms)


def is_json_tool_reply(message: dict[str, Any]) -> bool:
    """Whether every tool the message calls is LiteLLM's `json_tool_call` (and one is)."""
    from litellm.llms.anthropic.chat.transformation import RESPONSE_FORMAT_TOOL_NAME

    names = [
        block.get("name")
        for block in message.get("content") or []
        if isinstance(block, dict) and block.get("type") == "tool_use"
    ]
    return bool(names) and set(names) == {RESPONSE_FORMAT_TOOL_NAME}
