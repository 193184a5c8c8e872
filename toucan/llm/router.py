"""LlmRouter: the configured model groups behind one async `complete` call.

LiteLLM's Router holds the deployments (the paper's model names, each mapped to a LiteLLM model
string, api base and key variable). Around it this class owns what a long synthesis run needs:
an adaptive limiter per deployment (429 -> pause for retry-after and halve the window), retries
with jittered backoff for transient errors, configured fallbacks, the response cache, and one
`llm_call` event per call (tokens, latency, cost, the model that served it) collected in memory
for the flow to write.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any, TypeVar

import litellm
import openai
from litellm._internal_context import is_internal_call
from pydantic import BaseModel

from toucan.config import ModelsConfig
from toucan.errors import ConfigError, LlmError, RateLimited
from toucan.events import EventSink
from toucan.ids import content_hash
from toucan.llm.cache import CacheKey, LlmCache, make_cache_key
from toucan.llm.deployments import (
    backoff_delay,
    build_model_list,
    price_per_token,
    to_llama_cpp_format,
    to_reply,
    unique_deployments,
)
from toucan.llm.direct import DirectTransport, plan_endpoint, to_reply_from_json
from toucan.llm.errors import (
    ConnectionTrouble,
    HttpStatusError,
    is_rate_limit,
    is_retryable,
    read_retry_after,
    to_llm_error,
)
from toucan.llm.limiter import AdaptiveLimiter
from toucan.llm.replies import CallMeta, LlmReply
from toucan.llm.structured import complete_structured
from toucan.records import Event, utc_now

T = TypeVar("T", bound=BaseModel)
GROUPS = ("generator", "teacher", "judge")
RATE_LIMIT_PATIENCE_S = 600.0  # keep waiting out 429s this long per call before giving up
TIMEOUT_GRACE_S = 2.0  # our own deadline fires this long after LiteLLM's, as a backstop


class LlmRouter:
    """One object per run; safe to share between concurrent tasks on the run's event loop."""

    def __init__(
        self,
        models: ModelsConfig,
        *,
        local_base_url: str | None = None,
        cache: LlmCache | None = None,
        rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S,
    ) -> None:
        self.models = models
        self.cache = cache
        self.rate_limit_patience_s = rate_limit_patience_s
        self.deployments = {d.name: d for d in unique_deployments(models)}
        self.groups = {group: [d.name for d in models.group(group)] for group in GROUPS}
        model_list = build_model_list(models, local_base_url)
        self.model_strings = {m["model_name"]: m["litellm_params"]["model"] for m in model_list}
        # OpenAI-compatible deployments skip LiteLLM: one aiohttp session, ~10x less client CPU.
        self.endpoints = {
            m["model_name"]: plan_endpoint(
                self.deployments[m["model_name"]], m["litellm_params"], models.route_to_local
            )
            for m in model_list
        }
        self.transport = DirectTransport()
        self.prices = {name: price_per_token(d, d.model) for name, d in self.deployments.items()}
        self.limiters = {
            name: AdaptiveLimiter(d.max_concurrency, rpm=d.rpm, tpm=d.tpm)
            for name, d in self.deployments.items()
        }
        # Retries, cooldowns and fallbacks are ours (they must honour retry-after and never
        # fail a whole group on a burst of 429s), so LiteLLM's are switched off.
        self.router = litellm.Router(
            model_list=model_list, num_retries=0, disable_cooldowns=True, max_fallbacks=0
        )
        self._sinks: dict[tuple[str, str], EventSink] = {}

    # -- choosing a deployment --------------------------------------------------------

    def pick_deployment(self, group: str, seed_key: str) -> str:
        """A deployment of `group` drawn by the configured weights, deterministic in seed_key."""
        names = self.groups.get(group)
        if not names:
            raise ConfigError(f"model group {group!r} has no deployments")
        weights = [max(0.0, self.deployments[name].weight) for name in names]
        if not any(weights):
            weights = [1.0] * len(names)
        point = int(content_hash(seed_key, 12), 16) / 16**12 * sum(weights)
        for name, weight in zip(names, weights, strict=True):
            point -= weight
            if point < 0:
                return name
        return names[-1]

    def resolve(self, target: str, seed_key: str) -> str:
        if target in self.deployments:
            return target
        if target in self.groups:
            return self.pick_deployment(target, seed_key)
        known = ", ".join([*GROUPS, *self.deployments])
        raise ConfigError(f"unknown model group or deployment {target!r}; known: {known}")

    def fallback_chain(self, target: str, deployment: str) -> list[str]:
        chain = [deployment]
        for key in (deployment, target):
            for name in self.models.fallbacks.get(key, []):
                resolved = self.resolve(name, deployment)
                if resolved not in chain:
                    chain.append(resolved)
        return chain

    # -- calls ------------------------------------------------------------------------

    async def complete(
        self,
        target: str,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        meta: CallMeta | None = None,
        use_cache: bool = True,
    ) -> LlmReply:
        """Ask a group ("generator", "teacher", "judge") or a deployment by name.

        Served from the cache when this exact request already succeeded. Raises RateLimited,
        ModelTimeout or LlmError once the retries and fallbacks are used up.
        """
        meta = meta or CallMeta()
        request = (messages, tools, response_format, params)
        if use_cache and (cached := self.find_cached(target, *request, meta=meta)) is not None:
            return cached
        last_error: LlmError | None = None
        for name in self.plan(target, messages, meta):
            try:
                reply = await self.complete_on(name, *request, meta)
            except LlmError as error:
                last_error = error
                continue
            if use_cache:
                self.store_cached(reply, *request)
            return reply
        assert last_error is not None
        raise last_error

    def plan(self, target: str, messages: list[dict[str, Any]], meta: CallMeta) -> list[str]:
        """The deployment to ask first (deterministic per item) and its fallbacks, in order."""
        deployment = self.resolve(target, meta.item_id or content_hash(messages))
        return self.fallback_chain(target, deployment)

    def request_key(
        self,
        name: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None,
        params: dict[str, Any] | None,
    ) -> CacheKey:
        call_params = {**self.deployments[name].params, **(params or {})}
        model = self.model_strings[name]
        return make_cache_key(name, model, messages, tools, response_format, call_params)

    def find_cached(
        self,
        target: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        *,
        meta: CallMeta,
    ) -> LlmReply | None:
        """A stored reply to this request from any deployment of its plan; records the hit."""
        if self.cache is None:
            return None
        for name in self.plan(target, messages, meta):
            key = self.request_key(name, messages, tools, response_format, params)
            cached = self.cache.get(key)
            if cached is not None:
                self.record_event(meta, name, status="cached", reply=cached)
                return cached
        return None

    def store_cached(
        self,
        reply: LlmReply,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Remember a reply that succeeded as the answer to this request."""
        if self.cache is not None:
            key = self.request_key(reply.deployment, messages, tools, response_format, params)
            self.cache.put(key, reply)

    async def complete_on(
        self,
        name: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None,
        params: dict[str, Any] | None,
        meta: CallMeta,
    ) -> LlmReply:
        """One deployment, no cache: the call, its retries and its event."""
        request = self.build_request(name, messages, tools, response_format, params)
        started = time.perf_counter()
        try:
            response = await self.send_with_retries(name, request)
        except LlmError as error:
            latency_ms = (time.perf_counter() - started) * 1000
            self.record_event(meta, name, status="error", error=error, latency_ms=latency_ms)
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        model = self.model_strings[name]
        if isinstance(response, dict):
            reply = to_reply_from_json(response, name, model, latency_ms)
        else:
            reply = to_reply(response, name, model, latency_ms)
        # every deployment of the local profile is answered by the embedded model, whatever the
        # deployment is called; the row must say so, not echo the configured name
        reply.served_by_embedded = self.models.route_to_local
        input_price, output_price = self.prices[name]
        reply.cost_usd = (
            reply.usage.prompt_tokens * input_price + reply.usage.completion_tokens * output_price
        )
        self.record_event(meta, name, status="ok", reply=reply)
        return reply

    def build_request(
        self,
        name: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None,
        params: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The OpenAI chat request body (without `model`) deployment `name` is sent: online
        by `complete_on`, and as the `body` of a provider batch line (toucan/llm/batch_lines.py)."""
        request: dict[str, Any] = {"messages": messages}
        request.update({**self.deployments[name].params, **(params or {})})
        if self.models.route_to_local:
            # a small constrained model can ramble until its context is full: cap each reply
            request.setdefault("max_tokens", self.models.local.max_tokens)
        if tools:
            request["tools"] = tools
        if response_format:
            request["response_format"] = (
                to_llama_cpp_format(response_format)
                if self.models.route_to_local
                else response_format
            )
        return request

    async def send_with_retries(self, name: str, request: dict[str, Any]) -> Any:
        """One deployment: limiter admission, 429 pauses, backoff retries on transient errors."""
        deployment = self.deployments[name]
        endpoint = self.endpoints[name]
        limiter = self.limiters[name]
        rate_limit_deadline = time.monotonic() + self.rate_limit_patience_s
        attempt = 0
        while True:
            await limiter.acquire()
            tokens = 0
            error: BaseException | None = None
            # LiteLLM's own success logging and pricing run in a thread per call and cost ~30%
            # of the client CPU; we record events and price calls ourselves, so skip them.
            internal = is_internal_call.set(True)
            try:
                async with asyncio.timeout(deployment.timeout_s + TIMEOUT_GRACE_S):
                    if endpoint is not None:
                        response = await self.transport.post(endpoint, request)
                        tokens = (response.get("usage") or {}).get("total_tokens") or 0
                        return response
                    response = await self.router.acompletion(model=name, **request)
                usage = getattr(response, "usage", None)
                tokens = getattr(usage, "total_tokens", 0) or 0
                return response
            except (openai.OpenAIError, TimeoutError, HttpStatusError, ConnectionTrouble) as caught:
                error = caught
            finally:
                is_internal_call.reset(internal)
                limiter.release(succeeded=error is None, tokens=tokens)
            if is_rate_limit(error):
                limiter.on_rate_limited(read_retry_after(error))
                if time.monotonic() < rate_limit_deadline:
                    continue  # the limiter holds the retry back until the pause is over
                raise RateLimited(
                    f"{name}: still rate limited after {self.rate_limit_patience_s:.0f} s"
                ) from error
            attempt += 1
            if not is_retryable(error) or attempt > deployment.max_retries:
                raise to_llm_error(error, name) from error
            await asyncio.sleep(backoff_delay(attempt))

    async def complete_structured(
        self,
        target: str,
        messages: list[dict[str, Any]],
        schema: type[T],
        *,
        params: dict[str, Any] | None = None,
        meta: CallMeta | None = None,
        use_cache: bool = True,
    ) -> tuple[T, LlmReply]:
        """`schema` parsed from the reply (JSON-schema response_format, lenient parse, one
        repair), and the reply itself. Raises UnparseableReply (`.raw` = last reply text)."""
        return await complete_structured(
            self, target, messages, schema, params=params, meta=meta, use_cache=use_cache
        )

    async def aclose(self) -> None:
        """Close the direct transport's session on this loop (else closed with the loop)."""
        await self.transport.aclose()

    # -- events -----------------------------------------------------------------------

    def record_event(
        self,
        meta: CallMeta,
        name: str,
        *,
        status: str,
        reply: LlmReply | None = None,
        error: LlmError | None = None,
        latency_ms: float = 0.0,
    ) -> None:
        sink = self._sinks.get((meta.run_id, meta.stage))
        if sink is None:
            sink = self._sinks.setdefault(
                (meta.run_id, meta.stage), EventSink(run_id=meta.run_id, stage=meta.stage)
            )
        latency_ms = reply.latency_ms if reply is not None else latency_ms
        sink.record(
            kind="llm_call",
            item_id=meta.item_id,
            server=meta.server_id,
            model=name,
            served_by=reply.served_by if reply is not None else None,
            status=status,
            error_class=error.reason if error is not None else None,
            error=str(error) if error is not None else None,
            started_at=utc_now() - timedelta(milliseconds=latency_ms),
            latency_ms=latency_ms,
            tokens_in=reply.usage.prompt_tokens if reply and not reply.cached else 0,
            tokens_out=reply.usage.completion_tokens if reply and not reply.cached else 0,
            cost_usd=reply.cost_usd if reply is not None else 0.0,
        )

    def drain_events(self) -> list[Event]:
        """Every `llm_call` event collected since the last drain, for the caller to write."""
        return [event for sink in list(self._sinks.values()) for event in sink.drain()]
