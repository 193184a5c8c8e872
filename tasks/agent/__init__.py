"""The agent runner: one task, its servers' tools and a teacher -> one trajectory.

Plain async code (no Prefect, no DuckDB). `run_agent` runs the loop of a style named in
`STYLES` (tasks/agent/styles.py).
"""

from tasks.agent.breaker import ServerBreaker, ServerPaused
from tasks.agent.journal import CallJournal, journal_dir, read_journals
from tasks.agent.loop import AgentBudget, AgentJob, AgentRun, Teacher
from tasks.agent.naming import ExposedTool, expose_tools, name_map
from tasks.agent.styles import STYLES, AgentStyle, agent_style, check_styles, run_agent
from tasks.agent.toolbox import Toolbox, ToolCaller

__all__ = [
    "STYLES",
    "AgentBudget",
    "AgentJob",
    "AgentRun",
    "AgentStyle",
    "CallJournal",
    "ExposedTool",
    "ServerBreaker",
    "ServerPaused",
    "Teacher",
    "ToolCaller",
    "Toolbox",
    "agent_style",
    "check_styles",
    "expose_tools",
    "journal_dir",
    "name_map",
    "read_journals",
    "run_agent",
]
