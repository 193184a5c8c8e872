"""Stage 5 rules: checks of one trajectory without a model, each stored as its own flag.

Every rule answers "did this failure happen?" (True = fired). Unlike the reference filter,
tool failures are read from what the call returned (an error flag, a reason token, or text
that *starts* like an error) rather than from any tool output containing "error", and a single
clean result does not excuse the failed ones.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, Field

from tasks.scrub import environment_secrets
from tasks.secrets import SecretDetector, load_rules
from toucan.records import TRAJECTORY_RULES, CallLog, Task, Trajectory

RULES = TRAJECTORY_RULES  # the flag names; config's `drop_flags` accepts exactly these
# a result whose text opens like this is a failed execution, whatever its error flag says
ERROR_OPENING = re.compile(
    r"^\s*(?:\[?error\b|\[?exception\b|traceback \(most recent call last\)|failed to\b|"
    r"mcp error\b|execution error\b|tool .{0,60} (?:failed|not found)|"
    r"(?:[a-z_.]+)?(?:error|exception):)",
    re.IGNORECASE,
)
JUNK = (
    re.compile(r"(.)\1{29,}", re.DOTALL),  # one character 30+ times
    re.compile(r"!{12,}"),  # the reference's degenerate-generation check
    re.compile(r"(.{8,200}?)(?:\s*\1){3,}", re.DOTALL),  # a phrase 4+ times in a row
)
# kinds the export rewrites but that are no reason to drop a trajectory: a task may well be
# about writing to someone, and the export turns the address into user@example.com
NOT_A_LEAK = frozenset({"email"})
IRRELEVANT = "irrelevant"


def result_is_error(text: str, entry: CallLog) -> bool:
    """A failed execution: flagged by the server or our layer, or text that reads as one."""
    if entry.is_error or entry.error_reason:
        return True
    if ERROR_OPENING.match(text or ""):
        return True
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return False
    return isinstance(value, dict) and bool(value.get("error")) and len(value) <= 3


def tool_results(row: Trajectory) -> dict[str, str]:
    return {
        m.get("tool_call_id", ""): str(m.get("content") or "")
        for m in row.messages
        if m.get("role") == "tool"
    }


def final_answer(row: Trajectory) -> str:
    if "final_answer" in row.metadata and row.stop_reason == "final_answer":
        return str(row.metadata["final_answer"] or "")
    last = row.messages[-1] if row.messages else {}
    if last.get("role") != "assistant" or last.get("tool_calls"):
        return ""
    return str(last.get("content") or "")


def local_markers() -> list[str]:
    """Strings that would reveal this machine: its home and project directories (other local
    paths are caught by the detector's path rule)."""
    here = Path(__file__).resolve().parents[1]
    candidates = {str(Path.home()), str(here)}
    return sorted(c for c in candidates if len(c) > 4)


@functools.lru_cache(maxsize=8)
def leak_detector(markers: tuple[str, ...], secrets: tuple[str, ...]) -> SecretDetector:
    """The export's detector (tasks/secrets.py) plus this machine's folders and secrets."""
    return SecretDetector(
        load_rules(), literals={"machine_path": markers, "environment_secret": secrets}
    )


def leaks(text: str, markers: list[str], secrets: list[str]) -> dict[str, int]:
    """Secrets and local paths in `text`: occurrences by kind (e-mails are not leaks)."""
    findings = leak_detector(tuple(markers), tuple(secrets)).find(text)
    return dict(Counter(f.kind for f in findings if f.kind not in NOT_A_LEAK))


def all_text(row: Trajectory) -> str:
    parts = []
    for message in row.messages:
        parts.append(str(message.get("content") or ""))
        for call in message.get("tool_calls") or []:
            parts.append(str(call.get("function", {}).get("arguments") or ""))
    return "\n".join(parts)


def is_junk(text: str) -> bool:
    return any(pattern.search(text) for pattern in JUNK)


def called_pairs(row: Trajectory) -> list[tuple[str, str]]:
    return [(e.server_id or "", e.tool) for e in row.tool_call_log if e.tool]


def tool_accuracy(row: Trajectory, task: Task) -> dict[str, float]:
    """Share of target tools called (exact server + tool, not a substring) and whether they
    were called in the intended order. Empty for tasks without targets (irrelevance)."""
    targets = [(t.server_id, t.tool) for t in task.target_tools]
    if not targets or task.kind == IRRELEVANT:
        return {}
    calls = called_pairs(row)
    used = sum(1 for target in targets if target in calls)
    position = 0
    for call in calls:
        if position < len(targets) and call == targets[position]:
            position += 1
    return {
        "desired_tools_used": round(used / len(targets), 4),
        "order_correct": 1.0 if position == len(targets) else 0.0,
    }


class RuleFindings(BaseModel):
    """What the rules found besides their flags."""

    failed_calls: list[str] = Field(default_factory=list)  # call ids of failed executions
    leaks: dict[str, int] = Field(default_factory=dict)  # occurrences by kind


def evaluate_rules(
    row: Trajectory,
    task: Task,
    *,
    markers: list[str] | None = None,
    secrets: list[str] | None = None,
) -> tuple[dict[str, bool], RuleFindings]:
    """(flag per rule, what they found: which calls failed, what leaked by kind)."""
    irrelevant = task.kind == IRRELEVANT
    results = tool_results(row)
    failed = [
        e.call_id for e in row.tool_call_log if result_is_error(results.get(e.call_id, ""), e)
    ]
    found = leaks(
        all_text(row),
        local_markers() if markers is None else markers,
        environment_secrets() if secrets is None else secrets,
    )
    accuracy = tool_accuracy(row, task)
    assistant_text = "\n".join(
        str(m.get("content") or "") for m in row.messages if m.get("role") == "assistant"
    )
    flags = {
        "no_tool_call": not irrelevant and row.tool_calls == 0,
        "tool_called_on_irrelevant": irrelevant and row.tool_calls > 0,
        "tool_execution_error": bool(failed),
        "empty_final_answer": not final_answer(row).strip(),
        "local_path_or_secret": bool(found),
        "target_tool_not_called": bool(accuracy) and accuracy["desired_tools_used"] < 1.0,
        "repeated_junk": is_junk(assistant_text),
    }
    return flags, RuleFindings(failed_calls=failed, leaks=found)
