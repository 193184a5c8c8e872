"""From the config's model groups to LiteLLM deployments, and LiteLLM's replies to ours."""

from __future__ import annotations

import random
from typing import Any

from toucan.config import ModelDeployment, ModelsConfig
from toucan.errors import ConfigError
from toucan.llm.replies import LlmReply, ToolCall
from toucan.records import Usage

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 20.0
LOCAL_API_KEY = "local"  # llama-cpp's server wants no key; LiteLLM's openai client wants one
NO_API_KEY = "no-key"


def build_model_list(models: ModelsConfig, local_base_url: str | None) -> list[dict[str, Any]]:
    """LiteLLM Router `model_list`: one entry per deployment, named by its paper name."""
    model_list = []
    for deployment in unique_deployments(models):
        params: dict[str, Any] = {"model": deployment.model}
        if models.route_to_local:
            if local_base_url is None:
                raise ConfigError("profile `local` needs the embedded model server's url")
            params.update(model=f"openai/{deployment.name}", api_base=local_base_url)
            params["api_key"] = LOCAL_API_KEY
        else:
            if deployment.api_base:
                params["api_base"] = deployment.api_base
            if api_key := deployment_api_key(deployment):
                params["api_key"] = api_key
        params["timeout"] = deployment.timeout_s
        model_list.append({"model_name": deployment.name, "litellm_params": params})
    return model_list


def deployment_api_key(deployment: ModelDeployment) -> str | None:
    """The key a deployment is sent with: its configured one; for a server of its own
    (`api_base`) that checks none, NO_API_KEY, a fixed non-secret value (OpenAI-compatible
    clients refuse to send no key at all); None = the provider's default (LiteLLM: the
    provider's environment variable)."""
    if key := deployment.api_key():
        return key
    return NO_API_KEY if deployment.api_base else None


def unique_deployments(models: ModelsConfig) -> list[ModelDeployment]:
    by_name: dict[str, ModelDeployment] = {}
    for deployment in models.all():
        by_name.setdefault(deployment.name, deployment)
    return list(by_name.values())


def to_llama_cpp_format(response_format: dict[str, Any]) -> dict[str, Any]:
    """llama-cpp's server takes a schema as {"type": "json_object", "schema": ...} only."""
    schema = (response_format.get("json_schema") or {}).get("schema")
    if response_format.get("type") == "json_schema" and schema:
        return {"type": "json_object", "schema": schema}
    return response_format


def backoff_delay(attempt: int) -> float:
    """Full-jitter exponential backoff."""
    return random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))


def to_reply(response: Any, deployment: str, model: str, latency_ms: float) -> LlmReply:
    """A LiteLLM ModelResponse as our LlmReply; `served_by` is the response's `model`."""
    choice = response.choices[0]
    message = choice.message
    tool_calls = [
        ToolCall(
            id=call.id or f"call_{index}",
            name=call.function.name or "",
            arguments=call.function.arguments or "{}",
        )
        for index, call in enumerate(message.tool_calls or [])
    ]
    usage = getattr(response, "usage", None)
    return LlmReply(
        text=message.content or "",
        tool_calls=tool_calls,
        finish_reason=choice.finish_reason,
        usage=Usage(
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        ),
        latency_ms=latency_ms,
        deployment=deployment,
        model=model,
        served_by=str(getattr(response, "model", None) or "") or None,
    )
