"""Requests to a run's deployments: admission, retries, the breaker, and the two transports.

`DeploymentSender.send` asks one deployment once, as many times as it takes: the deployment's
adaptive limiter admits each request (429 -> pause for retry-after and halve the window),
transient failures are retried with jittered backoff, and every failed request counts against
the deployment in the run's `ModelBreaker`; once it is paused nothing more is sent and no retry
waits out its backoff. OpenAI-compatible deployments are posted directly
(toucan/llm/direct.py, ~10x less client CPU than LiteLLM); the rest go through LiteLLM's
Router, imported only when such a deployment exists.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from toucan.config import ModelsConfig
from toucan.errors import ModelGroupDown, RateLimited
from toucan.llm.breaker import ModelBreaker
from toucan.llm.deployments import backoff_delay, unique_deployments
from toucan.llm.direct import DirectTransport, plan_endpoint
from toucan.llm.errors import (
    ConnectionTrouble,
    HttpStatusError,
    is_deployment_failure,
    is_rate_limit,
    is_retryable,
    openai_error,
    read_retry_after,
    to_llm_error,
)
from toucan.llm.limiter import AdaptiveLimiter
from toucan.llm.providers import load_litellm

RATE_LIMIT_PATIENCE_S = 600.0  # keep waiting out 429s this long per call before giving up
TIMEOUT_GRACE_S = 2.0  # our own deadline fires this long after LiteLLM's, as a backstop


class DeploymentSender:
    """One router's way to its deployments: limiters, transports, retries (module docstring)."""

    def __init__(
        self,
        models: ModelsConfig,
        model_list: list[dict[str, Any]],
        breaker: ModelBreaker,
        *,
        rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S,
    ) -> None:
        """`model_list` is LiteLLM's (toucan/llm/deployments.py `build_model_list`)."""
        self.deployments = {d.name: d for d in unique_deployments(models)}
        self.breaker = breaker
        self.rate_limit_patience_s = rate_limit_patience_s
        self.endpoints = {
            m["model_name"]: plan_endpoint(
                self.deployments[m["model_name"]], m["litellm_params"], models.route_to_local
            )
            for m in model_list
        }
        self.transport = DirectTransport()
        self.limiters = {
            name: AdaptiveLimiter(d.max_concurrency, rpm=d.rpm, tpm=d.tpm)
            for name, d in self.deployments.items()
        }
        # Retries, cooldowns and fallbacks are ours (they must honour retry-after and never
        # fail a whole group on a burst of 429s), so LiteLLM's are switched off.
        self.router: Any = None
        if any(endpoint is None for endpoint in self.endpoints.values()):
            self.router = load_litellm().Router(
                model_list=model_list, num_retries=0, disable_cooldowns=True, max_fallbacks=0
            )

    async def send(self, name: str, request: dict[str, Any]) -> Any:
        """One deployment: limiter admission, 429 pauses, backoff retries on transient errors.
        Every failed request counts against the deployment in the breaker; once it is paused
        nothing more is sent (ModelGroupDown) and no retry waits out its backoff."""
        deployment = self.deployments[name]
        limiter = self.limiters[name]
        rate_limit_deadline = time.monotonic() + self.rate_limit_patience_s
        transient = (*openai_error("OpenAIError"), TimeoutError, HttpStatusError, ConnectionTrouble)
        attempt = 0
        while True:
            await limiter.acquire()
            if (paused := self.breaker.paused(name)) is not None:
                limiter.release(succeeded=False)
                raise ModelGroupDown(f"{name}: paused: {paused.detail}")
            tokens = 0
            error: BaseException | None = None
            try:
                async with asyncio.timeout(deployment.timeout_s + TIMEOUT_GRACE_S):
                    response = await self.send_once(name, request)
                tokens = total_tokens(response)
            except transient as caught:
                error = caught
            finally:
                limiter.release(succeeded=error is None, tokens=tokens)
            if error is None:
                self.breaker.record_success(name)
                return response
            if is_rate_limit(error):
                limiter.on_rate_limited(read_retry_after(error))
                if time.monotonic() < rate_limit_deadline:
                    continue  # the limiter holds the retry back until the pause is over
                raise RateLimited(
                    f"{name}: still rate limited after {self.rate_limit_patience_s:.0f} s"
                ) from error
            final = to_llm_error(error, name)
            if is_deployment_failure(error):
                self.breaker.record_failure(name, final.reason, str(error))
            attempt += 1
            retry = is_retryable(error) and attempt <= deployment.max_retries
            if not retry or self.breaker.paused(name) is not None:
                raise final from error
            await self.breaker.sleep(name, backoff_delay(attempt))

    async def send_once(self, name: str, request: dict[str, Any]) -> Any:
        """One request: a JSON dict from the direct transport, a ModelResponse from LiteLLM."""
        endpoint = self.endpoints[name]
        if endpoint is not None:
            return await self.transport.post(endpoint, request)
        from litellm._internal_context import is_internal_call  # loaded with the Router

        # LiteLLM's own success logging and pricing run in a thread per call and cost ~30%
        # of the client CPU; we record events and price calls ourselves, so skip them.
        internal = is_internal_call.set(True)
        try:
            return await self.router.acompletion(model=name, **request)
        finally:
            is_internal_call.reset(internal)

    async def aclose(self) -> None:
        """Close the direct transport's session on this loop (else closed with the loop)."""
        await self.transport.aclose()


def total_tokens(response: Any) -> int:
    """Total tokens of a reply as either transport returns it (0 when not reported)."""
    if isinstance(response, dict):
        return (response.get("usage") or {}).get("total_tokens") or 0
    return getattr(getattr(response, "usage", None), "total_tokens", 0) or 0
