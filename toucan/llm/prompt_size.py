"""A prompt's size against its model's context window, checked before the call is sent.

A prompt over the window can only fail at the provider, after the request went out (issue 15,
fault 7: a 5 MB catalog description became a 1.31M-token synthesis prompt). `check_prompt_size`
fails it first, as `prompt_too_large`: a final answer, never sent, nothing reserved.

The window: the deployment's `context_tokens`, else the embedded model's `n_ctx` for the
`local` profile, else LiteLLM's model map (`max_input_tokens`, read as JSON: prices.py);
a model none of them knows is not checked. Tokens are counted with tiktoken's `o200k_base`
(LiteLLM ships its files, so no download); other families' tokenizers give more tokens for
the same text, so the count errs towards letting a prompt through. A prompt whose UTF-8 bytes
alone fit is not tokenized: a token covers at least one byte.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

import orjson

from toucan.config import ModelDeployment, ModelsConfig
from toucan.errors import PromptTooLarge
from toucan.llm.prices import litellm_price_map

ENCODING = "o200k_base"
# per message: its role and the separators around it (OpenAI cookbook, "How to count tokens")
MESSAGE_OVERHEAD_TOKENS = 4
LITELLM_TOKENIZERS = ("litellm_core_utils", "tokenizers")  # tiktoken's files, in LiteLLM


def context_window(
    deployment: ModelDeployment, model_string: str, models: ModelsConfig
) -> int | None:
    """The deployment's context window in tokens, or None when nobody knows it."""
    if deployment.context_tokens is not None:
        return deployment.context_tokens
    if models.route_to_local:
        return models.local.n_ctx
    known = litellm_price_map()
    for name in (model_string, model_string.split("/", 1)[-1], model_string.rsplit("/", 1)[-1]):
        window = (known.get(name) or {}).get("max_input_tokens")
        if isinstance(window, int) and window > 0:
            return window
    return None


def request_parts(request: dict[str, Any]) -> list[str]:
    """The texts of a chat request that take up the window: each message's text and tool
    calls, the tool definitions and the response format (images and audio are not counted)."""
    parts: list[str] = []
    for message in request.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p["text"] for p in content if isinstance(p, dict) and "text" in p]
        if message.get("tool_calls"):
            parts.append(orjson.dumps(message["tool_calls"]).decode())
    for key in ("tools", "response_format"):
        if request.get(key):
            parts.append(orjson.dumps(request[key]).decode())
    return parts


@functools.cache
def encoding() -> Any:
    """tiktoken's encoding, from the files LiteLLM ships when no cache dir is set."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        spec = importlib.util.find_spec("litellm")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            bundled = Path(folder).joinpath(*LITELLM_TOKENIZERS)
            if bundled.is_dir():
                os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_tokens(parts: list[str], messages: int) -> int:
    """Prompt tokens of these texts in `messages` messages."""
    tokens = sum(len(encoding().encode_ordinary(part)) for part in parts)
    return tokens + MESSAGE_OVERHEAD_TOKENS * messages


def check_prompt_size(
    request: dict[str, Any], window: int | None, deployment: str, *, reply_room: bool = True
) -> None:
    """Raises PromptTooLarge when the request's prompt, plus the reply tokens it asks room
    for (`max_tokens`; `reply_room` False: not counted), cannot fit in `window` tokens (None:
    unknown, not checked). Providers refuse a request whose prompt and `max_tokens` overrun
    the window; llama.cpp (the embedded model) shortens the reply instead."""
    if window is None:
        return
    parts = request_parts(request)
    messages = len(request.get("messages", []))
    reply = request.get("max_completion_tokens") or request.get("max_tokens") or 0
    reply = reply if reply_room else 0
    room = window - (reply if isinstance(reply, int) else 0)
    most = sum(len(part.encode()) for part in parts) + MESSAGE_OVERHEAD_TOKENS * messages
    if most <= room:
        return  # a token covers at least one byte: no need to count
    tokens = count_tokens(parts, messages)
    if tokens > room:
        raise PromptTooLarge(
            f"{deployment}: the prompt is {tokens} tokens, the window {window} "
            f"({reply} of it kept for the reply): not sent"
        )
