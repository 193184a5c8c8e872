"""The agent styles: name -> the loop that runs one trajectory in that style.

Adding a style is a module with its loop, `async def run_<style>(job: AgentJob) -> AgentRun`
(plain async; tool and model failures end the run with a stop reason, never an exception; see
tasks/agent/loop.py), and one line in STYLES. `trajectories.styles` in the config and
`toucan trajectories --style` accept exactly these names: the stage checks them when it plans
(`check_styles`; ConfigError `unknown_agent_style`), as the core's config cannot import the
loops, and every row records its style's name (`Trajectory.style`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tasks.agent.langchain_style import run_langchain
from tasks.agent.loop import (
    AgentJob,
    AgentRun,
    function_calling_prompt,
    react_prompt,
    run_function_calling,
    run_react,
)
from tasks.agent.naming import ExposedTool
from toucan.config import check_names
from toucan.errors import ConfigError


@dataclass(frozen=True)
class AgentStyle:
    """How a style runs, and how its model learns the tools: the provider's tools API, or a
    description in the system prompt (the row's `metadata.tools_channel`)."""

    run: Callable[[AgentJob], Awaitable[AgentRun]]
    tools_channel: Literal["api", "system_prompt"] = "api"


STYLES: dict[str, AgentStyle] = {
    "function-calling": AgentStyle(run_function_calling),
    "react": AgentStyle(run_react, tools_channel="system_prompt"),
    "langchain": AgentStyle(run_langchain),  # needs the optional extra toucan[langchain]
}


def agent_style(name: str) -> AgentStyle:
    """The style called `name`. Raises ConfigError (`unknown_agent_style`) for any other."""
    try:
        return STYLES[name]
    except KeyError:
        raise ConfigError(
            f"unknown agent style {name!r}; known: {', '.join(STYLES)}",
            reason="unknown_agent_style",
        ) from None


def check_styles(names: Sequence[str]) -> list[str]:
    """`names` without repeats, in order, once each is known to be a style. Raises
    ConfigError (`unknown_agent_style`) naming every unknown one."""
    return check_names(names, STYLES, "agent style", "unknown_agent_style")


async def run_agent(style: str, job: AgentJob) -> AgentRun:
    """Run `job` in `style` until a final answer or a budget; never raises for a tool or
    model failure (those end the run with a stop reason). Raises ConfigError for an unknown
    style, or for `langchain` without its extra installed."""
    return await agent_style(style).run(job)


def opening_request(
    style: str, question: str, offered: list[ExposedTool]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The first model request of a trajectory in `style` offered these tools: the messages,
    and the tools-API entries (None when the style describes the tools in its system prompt).
    The langchain style sends the function-calling prompt, so it is counted as that one."""
    if agent_style(style).tools_channel == "system_prompt":
        return react_prompt(question, offered).messages, None
    tools = [tool.openai_schema() for tool in offered]
    return function_calling_prompt(question).messages, tools or None
