"""LlmRouter: the configured model groups behind one async `complete` call.

The deployments are the paper's model names, each mapped to a LiteLLM model string, api base
and key variable. This class owns what a long synthesis run needs around them: the choice of
a deployment (weights, configured fallbacks), the response cache, prices, and one `llm_call`
event per call (tokens, latency, cost, the model that served it) collected in memory for the
flow to write; `DeploymentSender` (toucan/llm/sending.py) sends each request (limiters,
retries, the direct transport or LiteLLM). Two guards are shared by every router of a run: the
`Budget` ledger (a call reserves its most possible cost before it is sent and settles the real
one) and the `ModelBreaker` (a deployment failing N requests in a row is paused; a call with no
live deployment fails as `model_unavailable` without being sent). Before either, a prompt that
cannot fit the deployment's context window fails as `prompt_too_large`, unsent
(toucan/llm/prompt_size.py).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from toucan.config import ModelsConfig
from toucan.errors import BudgetExhausted, ConfigError, LlmError, ModelGroupDown, PromptTooLarge
from toucan.events import EventSink
from toucan.ids import content_hash
from toucan.llm.breaker import ModelBreaker
from toucan.llm.budget import Budget, Reservation
from toucan.llm.cache import CacheKey, LlmCache, make_cache_key
from toucan.llm.deployments import (
    build_model_list,
    to_llama_cpp_format,
    to_reply,
    unique_deployments,
)
from toucan.llm.direct import to_reply_from_json
from toucan.llm.prices import (
    ModelPrice,
    completion_allowance,
    count_prompt_tokens,
    deployment_price,
)
from toucan.llm.prompt_size import check_prompt_size, context_window
from toucan.llm.replies import CallMeta, LlmReply, LlmRequest
from toucan.llm.sending import RATE_LIMIT_PATIENCE_S, DeploymentSender
from toucan.records import Event, utc_now

GROUPS = ("generator", "teacher", "judge")


class LlmRouter:
    """One object per run; safe to share between concurrent tasks on the run's event loop."""

    def __init__(
        self,
        models: ModelsConfig,
        *,
        local_base_url: str | None = None,
        cache: LlmCache | None = None,
        rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S,
        budget: Budget | None = None,
        breaker: ModelBreaker | None = None,
    ) -> None:
        """`budget` and `breaker` are the run's, shared with its other routers; without a
        budget nothing is capped, without a breaker this router keeps its own."""
        self.models = models
        self.budget = budget
        self.breaker = breaker or ModelBreaker(models.circuit_breaker_failures)
        self.cache = cache
        self.deployments = {d.name: d for d in unique_deployments(models)}
        self.groups = {group: [d.name for d in models.group(group)] for group in GROUPS}
        model_list = build_model_list(models, local_base_url)
        self.model_strings = {m["model_name"]: m["litellm_params"]["model"] for m in model_list}
        self.prices = {
            name: deployment_price(d, models.route_to_local) for name, d in self.deployments.items()
        }
        self.sender = DeploymentSender(
            models, model_list, self.breaker, rate_limit_patience_s=rate_limit_patience_s
        )
        self.limiters = self.sender.limiters  # per deployment, shared with the sender
        self.transport = self.sender.transport
        self.endpoints = self.sender.endpoints  # None: the deployment goes through LiteLLM
        self._sinks: dict[tuple[str, str], EventSink] = {}
        self.windows: dict[str, int | None] = {}  # context windows, looked up on first use

    # -- choosing a deployment --------------------------------------------------------

    def pick_deployment(self, group: str, seed_key: str, exclude: Collection[str] = ()) -> str:
        """A deployment of `group` drawn by the configured weights, deterministic in seed_key,
        never one of `exclude` (raises ModelGroupDown when that leaves none)."""
        names = self.groups.get(group)
        if not names:
            raise ConfigError(f"model group {group!r} has no deployments")
        names = [name for name in names if name not in exclude]
        if not names:
            raise ModelGroupDown(f"model group {group!r}: every deployment is paused")
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
        ModelTimeout or LlmError once the retries and fallbacks are used up, BudgetExhausted
        when the call would cross a budget cap, ModelGroupDown when every deployment that
        may answer it is paused (neither of the last two is sent).
        """
        meta = meta or CallMeta()
        request = LlmRequest(messages, tools, response_format, params)
        if use_cache and (cached := self.find_cached(target, request, meta=meta)) is not None:
            return cached
        reply = await self.answer(target, request, meta)
        if use_cache and not reply.cached:
            self.store_cached(reply, request)
        return reply

    async def answer(self, target: str, request: LlmRequest, meta: CallMeta) -> LlmReply:
        """`complete` past the cache: the plan's live deployments in turn until one answers
        (the hook a GatedRouter overrides to send the request in a provider batch job)."""
        last_error: LlmError | None = None
        tried: list[str] = []
        # a deployment paused during this call hands it on to a live one of its group
        while names := [
            name
            for name in self.live_plan(target, request.messages, meta, record=not tried)
            if name not in tried
        ]:
            for name in names:
                tried.append(name)
                try:
                    return await self.complete_on(name, request, meta)
                except BudgetExhausted as error:
                    if error.scope != "deployment":  # only a deployment's own cap leaves room
                        raise
                    last_error = error
                except LlmError as error:
                    last_error = error
        assert last_error is not None
        raise last_error

    def plan(self, target: str, messages: list[dict[str, Any]], meta: CallMeta) -> list[str]:
        """The deployment to ask first (deterministic per item) and its fallbacks, in order."""
        deployment = self.resolve(target, meta.item_id or content_hash(messages))
        return self.fallback_chain(target, deployment)

    def live_plan(
        self, target: str, messages: list[dict[str, Any]], meta: CallMeta, record: bool = False
    ) -> list[str]:
        """`plan` without the deployments the breaker paused; when that leaves none, a live
        deployment of the target group. Raises ModelGroupDown when nothing that may answer is
        live (the call is not sent; `record` makes that the call's event)."""
        planned = self.plan(target, messages, meta)
        live = [name for name in planned if self.breaker.paused(name) is None]
        try:
            if live:
                return live
            if target not in self.groups:
                why = self.breaker.paused(target)
                raise ModelGroupDown(f"{target}: paused: {why.detail if why else ''}")
            paused = [name for name in self.groups[target] if self.breaker.paused(name)]
            seed_key = meta.item_id or content_hash(messages)
            return [self.pick_deployment(target, seed_key, exclude=paused)]
        except ModelGroupDown as error:
            if record:
                self.record_event(meta, planned[0], status="error", error=error)
            raise

    def request_key(self, name: str, request: LlmRequest) -> CacheKey:
        messages, tools, response_format, params = request
        call_params = {**self.deployments[name].params, **(params or {})}
        model = self.model_strings[name]
        return make_cache_key(name, model, messages, tools, response_format, call_params)

    def find_cached(self, target: str, request: LlmRequest, *, meta: CallMeta) -> LlmReply | None:
        """A stored reply to this request from any deployment of its plan; records the hit."""
        if self.cache is None:
            return None
        for name in self.plan(target, request.messages, meta):
            key = self.request_key(name, request)
            cached = self.cache.get(key)
            if cached is not None:
                self.record_event(meta, name, status="cached", reply=cached)
                return cached
        return None

    def store_cached(self, reply: LlmReply, request: LlmRequest) -> None:
        """Remember a reply that succeeded as the answer to this request."""
        if self.cache is not None:
            self.cache.put(self.request_key(reply.deployment, request), reply)

    async def complete_on(self, name: str, request: LlmRequest, meta: CallMeta) -> LlmReply:
        """One deployment, no cache: the budget reservation, the call, its retries, its event."""
        body = self.build_request(name, request)
        self.check_size(name, body, meta)
        reservation = await self.reserve(name, body, meta)
        try:
            reply = await self.answer_on(name, body, meta)
        except BaseException:
            self.settle(reservation, None)
            raise
        self.settle(reservation, reply.cost_usd)
        return reply

    async def answer_on(self, name: str, request: dict[str, Any], meta: CallMeta) -> LlmReply:
        """Send a built request to one deployment; the reply, priced, and its event."""
        started = time.perf_counter()
        try:
            response = await self.sender.send(name, request)
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
        price = self.prices[name]  # None: unknown, recorded as 0
        usage = reply.usage
        reply.cost_usd = price.cost(usage.prompt_tokens, usage.completion_tokens) if price else 0.0
        self.record_event(meta, name, status="ok", reply=reply)
        return reply

    def build_request(self, name: str, request: LlmRequest) -> dict[str, Any]:
        """The OpenAI chat request body (without `model`) deployment `name` is sent: online
        by `complete_on`, and as the `body` of a provider batch line (toucan/llm/batch_lines.py)."""
        messages, tools, response_format, params = request
        body: dict[str, Any] = {"messages": messages}
        body.update({**self.deployments[name].params, **(params or {})})
        if self.models.route_to_local:
            # a small constrained model can ramble until its context is full: cap each reply
            body.setdefault("max_tokens", self.models.local.max_tokens)
        if tools:
            body["tools"] = tools
        if response_format:
            body["response_format"] = (
                to_llama_cpp_format(response_format)
                if self.models.route_to_local
                else response_format
            )
        return body

    def check_size(self, name: str, request: dict[str, Any], meta: CallMeta) -> None:
        """Raises PromptTooLarge, recorded as the call's event, when the request cannot fit
        the deployment's context window (toucan/llm/prompt_size.py): nothing is sent or
        reserved, and a fallback with a larger window may still answer."""
        if name not in self.windows:
            deployment, model = self.deployments[name], self.model_strings[name]
            self.windows[name] = context_window(deployment, model, self.models)
        try:
            local = self.models.route_to_local
            check_prompt_size(request, self.windows[name], name, reply_room=not local)
        except PromptTooLarge as error:
            self.record_event(meta, name, status="error", error=error)
            raise

    async def reserve(
        self, name: str, request: dict[str, Any], meta: CallMeta
    ) -> Reservation | None:
        """Hold the call's most possible cost in the run's budget (None: no budget). Raises
        BudgetExhausted, recorded as the call's event, when that would cross a cap."""
        if self.budget is None:
            return None
        try:
            return await self.budget.reserve(
                meta.stage, name, self.most_cost(name, request, self.prices[name])
            )
        except BudgetExhausted as error:
            self.record_event(meta, name, status="error", error=error)
            raise

    def most_cost(self, name: str, request: dict[str, Any], price: ModelPrice | None) -> float:
        """The most a built request to deployment `name` can cost at `price` (dollars): its
        prompt tokens, and its max_tokens or the model's output limit; 0 when unpriced."""
        if price is None:
            return 0.0
        model = self.model_strings[name]
        prompt_tokens = count_prompt_tokens(model, request["messages"], request.get("tools"))
        return price.cost(prompt_tokens, completion_allowance(request, price))

    def settle(self, reservation: Reservation | None, cost_usd: float | None) -> None:
        """Spend a reservation at the reply's cost, or release it (None: the call failed)."""
        if reservation is None or self.budget is None:
            return
        if cost_usd is None:
            self.budget.release(reservation)
        else:
            self.budget.settle(reservation, cost_usd)

    async def aclose(self) -> None:
        """Close the direct transport's session on this loop (else closed with the loop)."""
        await self.sender.aclose()

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
