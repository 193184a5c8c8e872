"""The agent runner: one task, its servers' tools and a teacher -> one trajectory.

Plain async code (no Prefect, no DuckDB). `run_agent` picks the style's loop.
"""

from tasks.agent.breaker import CircuitBreaker, ServerPaused
from tasks.agent.journal import CallJournal, journal_dir, read_journals
from tasks.agent.loop import AgentBudget, AgentRun, Teacher, run_function_calling, run_react
from tasks.agent.naming import ExposedTool, expose_tools, name_map
from tasks.agent.runner import STYLES, run_agent
from tasks.agent.toolbox import Toolbox, ToolCaller

__all__ = [
    "STYLES",
    "AgentBudget",
    "AgentRun",
    "CallJournal",
    "CircuitBreaker",
    "ExposedTool",
    "ServerPaused",
    "Teacher",
    "ToolCaller",
    "Toolbox",
    "expose_tools",
    "journal_dir",
    "name_map",
    "read_journals",
    "run_agent",
    "run_function_calling",
    "run_react",
]
