"""The direct transport: POST /chat/completions on one shared aiohttp session per event loop.

LiteLLM's Router costs ~17 ms of client CPU per call (a bare aiohttp post ~2 ms), which caps a
2-core box at a fraction of what the model server can take. Every OpenAI-compatible deployment
(OpenAI, Together, Mistral, Moonshot, OpenRouter, vLLM, the embedded llama-cpp server, anything
with an `api_base`) therefore goes straight over HTTP here; other providers stay on LiteLLM.
Failures come back as `HttpStatusError` / `ConnectionTrouble` / `TimeoutError`, which the
router's retry loop treats exactly like LiteLLM's exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from toucan.config import ModelDeployment
from toucan.llm.errors import ConnectionTrouble, HttpStatusError
from toucan.llm.providers import OPENAI_COMPATIBLE, UnknownProvider, split_provider
from toucan.llm.replies import LlmReply, ToolCall
from toucan.records import Usage


@dataclass(frozen=True)
class Endpoint:
    """Where and as what one deployment is asked over the direct transport."""

    url: str  # .../chat/completions
    model: str  # the provider's model id (LiteLLM's prefix stripped)
    headers: dict[str, str]
    timeout_s: float

    @property
    def base(self) -> str:
        """The API root the chat url hangs off (.../v1): where /files and /batches are too."""
        return self.url.removesuffix("/chat/completions")


def plan_endpoint(
    deployment: ModelDeployment, litellm_params: dict[str, Any], route_to_local: bool
) -> Endpoint | None:
    """The deployment's direct endpoint, or None when it must go through LiteLLM."""
    if deployment.transport == "litellm":
        return None
    model_string = litellm_params["model"]
    api_base = litellm_params.get("api_base")
    try:
        model, provider, provider_base = split_provider(model_string, api_base)
    except UnknownProvider:  # only an explicit base can help
        model, provider, provider_base = model_string, "", None
    compatible = provider in OPENAI_COMPATIBLE or (route_to_local and api_base)
    if not compatible and deployment.transport == "auto":
        return None
    base = api_base or OPENAI_COMPATIBLE.get(provider) or provider_base
    if not base:
        if deployment.transport == "direct":
            raise ValueError(f"{deployment.name}: transport=direct needs an api_base")
        return None
    headers = {"content-type": "application/json"}
    if key := litellm_params.get("api_key"):
        headers["authorization"] = f"Bearer {key}"
    url = base.rstrip("/") + "/chat/completions"
    return Endpoint(url=url, model=model, headers=headers, timeout_s=deployment.timeout_s)


class DirectTransport:
    """One aiohttp session per event loop, created on first use and closed with the loop."""

    def __init__(self, max_connections: int = 0) -> None:
        self.max_connections = max_connections
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncIterator[None]]
        ] = weakref.WeakKeyDictionary()

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        held = self._sessions.get(loop)
        if held is None or held[0].closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300)
            session = aiohttp.ClientSession(connector=connector, json_serialize=dump_json)
            keeper = close_with_loop(session)
            held = (session, keeper)
            self._sessions[loop] = held
            start_keeper(keeper)
        return held[0]

    async def post(self, endpoint: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
        """The decoded JSON reply; raises HttpStatusError, ConnectionTrouble or TimeoutError."""
        body = {"model": endpoint.model, **request}
        raw = await self.send(
            "POST", endpoint.url, headers=endpoint.headers, timeout_s=endpoint.timeout_s, json=body
        )
        return decode_json(raw)

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        timeout_s: float,
        json: Any = None,
        data: Any = None,
        params: dict[str, str] | None = None,
    ) -> bytes:
        """The body of a 2xx reply (any request: chat, files, batches); raises HttpStatusError
        (non-2xx), ConnectionTrouble or TimeoutError."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self.session().request(
                method, url, json=json, data=data, params=params, headers=headers, timeout=timeout
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    text = raw.decode("utf-8", "replace")
                    raise HttpStatusError(response.status, text[:1000], dict(response.headers))
                return raw
        except (TimeoutError, aiohttp.ServerTimeoutError) as error:
            raise TimeoutError(f"no reply within {timeout_s:.1f} s") from error
        except aiohttp.ClientError as error:
            raise ConnectionTrouble(f"{type(error).__name__}: {error}") from error

    async def aclose(self) -> None:
        """Close this loop's session now (it is closed anyway when the loop shuts down)."""
        held = self._sessions.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[0].close()


async def close_with_loop(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    """An async generator parked at its yield: the loop's `shutdown_asyncgens` (run by
    asyncio.run / Runner) finalizes it, which closes the session before the loop closes."""
    try:
        yield
    finally:
        await session.close()


def start_keeper(keeper: AsyncIterator[None]) -> None:
    """Advance the keeper to its yield synchronously so the running loop tracks it."""
    step = keeper.__anext__()
    with contextlib.suppress(StopIteration):
        step.send(None)


def decode_json(raw: bytes) -> dict[str, Any]:
    """A reply body as JSON; ConnectionTrouble (retried) when it is not JSON."""
    try:
        return orjson.loads(raw)
    except ValueError as error:
        raise ConnectionTrouble(f"reply is not JSON: {raw[:200]!r}") from error


def dump_json(value: Any) -> str:
    """Request bodies: orjson, as the request is re-encoded on every turn of a conversation."""
    return orjson.dumps(value).decode()


def to_reply_from_json(
    data: dict[str, Any], deployment: str, model: str, latency_ms: float
) -> LlmReply:
    """An OpenAI-format chat completion as our LlmReply. `served_by` is the completion's
    `model` (OpenAI API reference, chat completion object: "the model used for the chat
    completion"), which names the snapshot that answered, not the alias asked for."""
    choices = data.get("choices") or []
    if not choices:
        raise ConnectionTrouble(f"reply has no choices: {str(data)[:200]}")
    choice = choices[0]
    message = choice.get("message") or {}
    tool_calls = [
        ToolCall(
            id=call.get("id") or f"call_{index}",
            name=(call.get("function") or {}).get("name") or "",
            arguments=(call.get("function") or {}).get("arguments") or "{}",
        )
        for index, call in enumerate(message.get("tool_calls") or [])
    ]
    usage = data.get("usage") or {}
    return LlmReply(
        text=message.get("content") or "",
        tool_calls=tool_calls,
        finish_reason=choice.get("finish_reason"),
        usage=Usage(
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
        ),
        latency_ms=latency_ms,
        deployment=deployment,
        model=model,
        served_by=str(data.get("model") or "") or None,
    )
