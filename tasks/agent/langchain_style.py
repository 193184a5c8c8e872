"""The `langchain` style: LangChain 1.x's own agent loop, with our tools and our record.

Optional extra `toucan[langchain]`. The model is reached through `langchain-litellm`; the tools
are LangChain StructuredTools whose coroutine is our Toolbox, so calls go to the pooled MCP
sessions with the same replay, truncation, error handling and circuit breaker as the other
styles. (`langchain-mcp-adapters` 0.3 imports `mcp.server.fastmcp`, which the MCP SDK 2.x we
run on no longer has, so its converters cannot be imported; the binding is done here the same
way: one StructuredTool per MCP tool, JSON schema as args_schema.)
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from pydantic import BaseModel

from tasks.agent.loop import AgentBudget, AgentJob, AgentRun, is_looping
from tasks.agent.toolbox import Toolbox
from toucan.config import ModelsConfig
from toucan.errors import ConfigError
from toucan.llm.deployments import build_model_list
from toucan.llm.prices import FREE, deployment_price
from toucan.prompts import render


def import_langchain() -> tuple[Any, Any, Any, Any]:
    try:
        from langchain.agents import create_agent
        from langchain_core.messages import convert_to_openai_messages
        from langchain_core.tools import StructuredTool
        from langchain_litellm import ChatLiteLLM
    except ImportError as error:
        raise ConfigError(
            "the langchain style needs `pip install toucan[langchain]`", reason="langchain_missing"
        ) from error
    return create_agent, convert_to_openai_messages, StructuredTool, ChatLiteLLM


def bind_tools(toolbox: Toolbox, structured_tool: Any) -> list[Any]:
    """One LangChain tool per exposed MCP tool; each call goes through the toolbox."""
    tools = []
    for exposed in toolbox.exposed:
        schema = exposed.openai_schema()["function"]

        async def call(_name: str = exposed.name, **arguments: Any) -> str:
            return await toolbox.call(f"lc_{len(toolbox.log)}", _name, json.dumps(arguments))

        tools.append(
            structured_tool.from_function(
                coroutine=call,
                name=exposed.name,
                description=schema["description"] or exposed.name,
                args_schema=schema["parameters"],
            )
        )
    return tools


def match_call_ids(messages: list[dict[str, Any]], toolbox: Toolbox) -> None:
    """Give each log entry the id LangChain used for that call (matched by name + arguments)."""
    free = list(toolbox.log)
    for message in messages:
        for call in message.get("tool_calls") or []:
            function = call.get("function", {})
            arguments = json.loads(function.get("arguments") or "{}")
            for entry in free:
                if entry.name == function.get("name") and entry.arguments == arguments:
                    entry.call_id = call["id"]
                    free.remove(entry)
                    break


class LangchainModel(BaseModel):
    """What LangChain's own LiteLLM client needs to reach one teacher deployment, its prices
    and the row's provenance."""

    model: str  # the LiteLLM model string
    api_base: str | None = None
    api_key: str | None = None
    timeout: float | None = None  # seconds per request
    input_cost: float = 0.0  # USD per prompt token
    output_cost: float = 0.0  # USD per completion token
    deployment: str
    served_by_embedded: bool = False


def langchain_model(
    models: ModelsConfig, local_base_url: str | None, teacher: str
) -> LangchainModel:
    """The teacher deployment as LangChain's client reaches it: the LiteLLM parameters the
    router would use (toucan/llm/deployments.py). Raises ConfigError for an unknown teacher."""
    deployment = next((d for d in models.teachers if d.name == teacher), None)
    entry = next(
        (e for e in build_model_list(models, local_base_url) if e["model_name"] == teacher), None
    )
    if deployment is None or entry is None:
        raise ConfigError(f"no teacher deployment named {teacher!r}", reason="unknown_teacher")
    params = entry["litellm_params"]
    price = deployment_price(deployment, models.route_to_local) or FREE
    return LangchainModel(
        model=params["model"],
        api_base=params.get("api_base"),
        api_key=params.get("api_key"),
        timeout=params.get("timeout"),
        input_cost=price.input_per_token,
        output_cost=price.output_per_token,
        deployment=teacher,
        served_by_embedded=models.route_to_local,
    )


async def run_langchain(job: AgentJob) -> AgentRun:
    """LangChain's agent loop on the job's tools. Raises ConfigError when the extra is not
    installed or the job carries no model settings (`models`)."""
    if job.models is None:
        raise ConfigError("the langchain style needs the teacher's model settings")
    model = langchain_model(job.models, job.local_base_url, job.target)
    create_agent, to_openai, structured_tool, chat_litellm = import_langchain()
    toolbox, budget = job.toolbox, job.budget
    prompt = render("trajectories/function_calling", question=job.question)
    system = next(m["content"] for m in prompt.messages if m["role"] == "system")
    chat = chat_litellm(
        model=model.model,
        api_base=model.api_base,
        api_key=model.api_key,
        request_timeout=model.timeout,
        max_retries=1,
    )
    agent = create_agent(chat, bind_tools(toolbox, structured_tool), system_prompt=system)
    run = AgentRun(
        messages=list(prompt.messages),
        tools=[tool.openai_schema() for tool in toolbox.exposed],
        prompt_hash=prompt.template_hash,
        model=model.model,
        # LangChain's LiteLLM client reports the model it asked for, not the response's
        # `model`, so what served the turns stays unknown (None) in this style
        deployment=model.deployment,
        served_by_embedded=model.served_by_embedded,
    )
    state_messages: list[Any] = []
    deadline = time.monotonic() + budget.wall_clock_s
    history: list[str] = []
    run.stop_reason = await drive_agent(
        agent, job.question, budget, deadline, state_messages, history, toolbox, run
    )
    ai_messages = [m for m in state_messages if getattr(m, "type", "") == "ai"]
    run.turns = len(ai_messages)
    for message in ai_messages:
        usage = getattr(message, "usage_metadata", None) or {}
        run.usage.prompt_tokens += usage.get("input_tokens", 0)
        run.usage.completion_tokens += usage.get("output_tokens", 0)
    run.cost_usd = (
        run.usage.prompt_tokens * model.input_cost + run.usage.completion_tokens * model.output_cost
    )
    converted = to_openai(state_messages)
    run.messages = [*[m for m in prompt.messages if m["role"] == "system"], *converted]
    match_call_ids(run.messages, toolbox)
    last = run.messages[-1] if run.messages else {}
    if run.stop_reason == "final_answer":
        run.final_answer = str(last.get("content") or "").strip()
        if not run.final_answer:
            run.stop_reason = "empty_answer"
    return run


async def drive_agent(
    agent: Any,
    question: str,
    budget: AgentBudget,
    deadline: float,
    state_messages: list[Any],
    history: list[str],
    toolbox: Toolbox,
    run: AgentRun,
) -> str:
    """Stream LangChain's loop, keeping the latest state; returns the stop reason."""
    from langgraph.errors import GraphRecursionError

    config = {"recursion_limit": 2 * budget.max_turns + 1}
    try:
        async with asyncio.timeout(max(0.001, deadline - time.monotonic())):
            async for state in agent.astream(
                {"messages": [{"role": "user", "content": question}]},
                config=config,
                stream_mode="values",
            ):
                state_messages[:] = state["messages"]
                last = state_messages[-1]
                if getattr(last, "type", "") == "ai" and last.tool_calls:
                    history.append(
                        json.dumps(
                            sorted(
                                (c["name"], json.dumps(c["args"], sort_keys=True))
                                for c in last.tool_calls
                            )
                        )
                    )
                    if is_looping(history, budget.loop_limit):
                        return "repeated_tool_call"
                if getattr(last, "type", "") == "tool" and toolbox.paused is not None:
                    return "server_unavailable"
    except TimeoutError:
        return "wall_clock"
    except GraphRecursionError:
        return "max_turns"
    except Exception as error:  # LiteLLM/LangChain model failures arrive as assorted types
        run.error_reason, run.error_detail = "model_error", repr(error)[:2000]
        return "model_error"
    last = state_messages[-1] if state_messages else None
    if last is not None and getattr(last, "type", "") == "ai" and not last.tool_calls:
        return "final_answer"
    return "max_turns"
