"""What `toucan demo` says before and after a run: the local profile's budgets and loosened
keep rule, and one line of summary per stage."""

from __future__ import annotations

from cli.demo import brief_summary, describe_local_profile
from toucan.config import load_settings


def test_the_demo_states_the_budgets_and_every_loosened_keep_rule() -> None:
    budget_line, keep_line = describe_local_profile(load_settings(profile="local"))
    assert "2 tools offered per trajectory" in budget_line
    assert "task scores >= 1" in keep_line and "completeness >= 1" in keep_line
    assert "(not: tool_execution_error)" in keep_line
    assert "target_tool_not_called" in keep_line.split("(not:")[0]


def test_a_stage_summary_fits_on_one_line_without_the_run_id() -> None:
    summary = {
        "run_id": "run_1",
        "planned": 4,
        "by_status": {"ok": 3},
        **{f"k{i}": i for i in range(9)},
    }
    line = brief_summary(summary)
    assert line.startswith("planned=4, by_status={'ok': 3}")
    assert "run_id" not in line and "k5" not in line
