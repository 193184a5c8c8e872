"""`run_agent`: dispatch one trajectory to the loop of its style."""

from __future__ import annotations

from typing import Any

from tasks.agent.loop import AgentBudget, AgentRun, Teacher, run_function_calling, run_react
from tasks.agent.react import describe_tools
from tasks.agent.toolbox import Toolbox
from toucan.errors import ConfigError
from toucan.llm.replies import CallMeta

STYLES = ("function-calling", "react", "langchain")


async def run_agent(
    style: str,
    question: str,
    toolbox: Toolbox,
    teacher: Teacher,
    target: str,
    budget: AgentBudget,
    meta: CallMeta,
    *,
    langchain_model: dict[str, Any] | None = None,
) -> AgentRun:
    """Run the loop of `style` until a final answer or a budget; never raises for a tool or
    model failure (those end the run with a stop reason). `langchain_model` holds the LiteLLM
    parameters (model, api_base, api_key) LangChain's own model client needs."""
    if style == "function-calling":
        return await run_function_calling(question, toolbox, teacher, target, budget, meta)
    if style == "react":
        return await run_react(
            question, toolbox, teacher, target, budget, meta, describe_tools(toolbox.exposed)
        )
    if style == "langchain":
        from tasks.agent.langchain_style import run_langchain

        if langchain_model is None:
            raise ConfigError("the langchain style needs the teacher's LiteLLM parameters")
        return await run_langchain(question, toolbox, langchain_model, budget)
    raise ConfigError(f"unknown agent style {style!r}; known: {', '.join(STYLES)}")
