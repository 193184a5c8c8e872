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

from tasks.agent.loop import AgentBudget, AgentRun, is_looping
from tasks.agent.toolbox import Toolbox
from toucan.errors import ConfigError
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


async def run_langchain(
    question: str, toolbox: Toolbox, model: dict[str, Any], budget: AgentBudget
) -> AgentRun:
    create_agent, to_openai, structured_tool, chat_litellm = import_langchain()
    prompt = render("trajectories/function_calling", question=question)
    system = next(m["content"] for m in prompt.messages if m["role"] == "system")
    chat = chat_litellm(
        model=model["model"],
        api_base=model.get("api_base"),
        api_key=model.get("api_key"),
        request_timeout=model.get("timeout"),
        max_retries=1,
    )
    agent = create_agent(chat, bind_tools(toolbox, structured_tool), system_prompt=system)
    run = AgentRun(
        messages=list(prompt.messages),
        tools=[tool.openai_schema() for tool in toolbox.exposed],
        prompt_hash=prompt.template_hash,
        model=model["model"],
        # LangChain's LiteLLM client reports the model it asked for, not the response's
        # `model`, so what served the turns stays unknown (None) in this style
        deployment=model.get("deployment"),
        served_by_embedded=model.get("served_by_embedded"),
    )
    state_messages: list[Any] = []
    deadline = time.monotonic() + budget.wall_clock_s
    history: list[str] = []
    run.stop_reason = await drive_agent(
        agent, question, budget, deadline, state_messages, history, toolbox, run
    )
    ai_messages = [m for m in state_messages if getattr(m, "type", "") == "ai"]
    run.turns = len(ai_messages)
    for message in ai_messages:
        usage = getattr(message, "usage_metadata", None) or {}
        run.usage.prompt_tokens += usage.get("input_tokens", 0)
        run.usage.completion_tokens += usage.get("output_tokens", 0)
    run.cost_usd = run.usage.prompt_tokens * model.get(
        "input_cost", 0.0
    ) + run.usage.completion_tokens * model.get("output_cost", 0.0)
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
