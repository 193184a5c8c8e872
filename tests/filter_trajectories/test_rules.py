"""Stage 5 rules, tool accuracy, judge view and keep rule: pure functions."""

from __future__ import annotations

import pytest

from tasks.filter_trajectories import build_transcript, decide_keep
from tasks.trajectory_rules import NOT_A_LEAK, evaluate_rules, result_is_error, tool_accuracy
from tests.export.seeding import LEAKS, ORDINARY_TOOL_OUTPUT
from tests.filter_trajectories.samples import make_task, make_trajectory
from toucan.config import FilterTrajectoriesConfig
from toucan.records import CallLog, Score

CLEAN = [("calculate", {"expression": "6*7"}, "42", False)]


def flags_of(trajectory, task, **kwargs):
    flags, _ = evaluate_rules(
        trajectory, task, markers=["/work/main"], secrets=["s3cr3t-value"], **kwargs
    )
    return {name for name, fired in flags.items() if fired}


def test_a_clean_trajectory_fires_no_rule_and_scores_full_tool_accuracy() -> None:
    task = make_task()
    row = make_trajectory(task, CLEAN)
    assert flags_of(row, task) == set()
    assert tool_accuracy(row, task) == {"desired_tools_used": 1.0, "order_correct": 1.0}


def test_no_tool_call_fires_for_a_normal_task_but_not_for_an_irrelevant_one() -> None:
    normal, irrelevant = make_task(), make_task(kind="irrelevant", targets=())
    assert "no_tool_call" in flags_of(make_trajectory(normal, []), normal)
    assert flags_of(make_trajectory(irrelevant, []), irrelevant) == set()
    called = flags_of(make_trajectory(irrelevant, CLEAN), irrelevant)
    assert called == {"tool_called_on_irrelevant"}


def test_execution_errors_are_read_from_the_result_not_from_any_mention_of_error() -> None:
    clean, flagged = CallLog(call_id="c0", name="t"), CallLog(call_id="c1", name="t", is_error=True)
    assert result_is_error("Error: division by zero", clean)
    assert result_is_error("ValueError: bad input", clean)
    assert result_is_error('{"error": "not found"}', clean)
    assert result_is_error("42", flagged)
    assert not result_is_error("The error rate fell to 2% and the value is invalid-free.", clean)
    assert not result_is_error('{"rows": [{"error_count": 0}]}', clean)
    task = make_task()
    mixed = [*CLEAN, ("calculate", {"expression": "1/0"}, "Error: division by zero", False)]
    assert "tool_execution_error" in flags_of(make_trajectory(task, mixed), task)


def test_empty_final_answer_and_repeated_junk_fire() -> None:
    task = make_task()
    assert "empty_final_answer" in flags_of(make_trajectory(task, CLEAN, answer="  "), task)
    junk = "The answer is 42. " * 6
    assert "repeated_junk" in flags_of(make_trajectory(task, CLEAN, answer=junk), task)
    assert "repeated_junk" in flags_of(make_trajectory(task, CLEAN, answer="42!!!!!!!!!!!!!"), task)


def test_local_paths_and_secrets_anywhere_in_the_content_fire() -> None:
    task = make_task()
    for leak in (
        "/work/main/data/x.db",
        "/home/alice/notes.txt",
        "key sk-abcdefghijklmnop1234",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
        "AKIAABCDEFGHIJKLMNOP",
        "token s3cr3t-value here",
    ):
        row = make_trajectory(task, [("calculate", {"expression": leak}, "42", False)])
        assert "local_path_or_secret" in flags_of(row, task), leak
        row = make_trajectory(task, CLEAN, answer=f"Done: {leak}")
        assert "local_path_or_secret" in flags_of(row, task), leak


def leaks_of(trajectory, task) -> dict[str, int]:
    _, findings = evaluate_rules(trajectory, task, markers=["/work/main"], secrets=[])
    return findings.leaks


@pytest.mark.parametrize("leak", LEAKS, ids=lambda leak: f"{leak.kind}:{leak.text[:24]}")
def test_every_kind_the_export_scrubs_fires_the_rule_and_is_counted_by_kind(leak) -> None:
    task = make_task()
    in_arguments = make_trajectory(task, [("calculate", {"expression": leak.text}, "42", False)])
    in_result = make_trajectory(task, [("calculate", {"expression": "6*7"}, leak.text, False)])
    for row in (in_arguments, in_result):
        if leak.kind in NOT_A_LEAK:
            assert "local_path_or_secret" not in flags_of(row, task)
            assert leaks_of(row, task) == {}
        else:
            assert "local_path_or_secret" in flags_of(row, task)
            assert leaks_of(row, task) == {leak.kind: 1}


@pytest.mark.parametrize("text", ORDINARY_TOOL_OUTPUT)
def test_ordinary_tool_output_does_not_fire_the_leak_rule(text) -> None:
    task = make_task()
    row = make_trajectory(task, [("calculate", {"expression": "6*7"}, text, False)])
    assert "local_path_or_secret" not in flags_of(row, task)


def test_target_tools_are_matched_exactly_and_in_order() -> None:
    task = make_task(targets=("calculate", "sum"))
    calls = [("sum", {}, "3", False), ("calculate", {}, "42", False)]
    row = make_trajectory(task, calls)
    assert tool_accuracy(row, task) == {"desired_tools_used": 1.0, "order_correct": 0.0}
    only_one = make_trajectory(
        task, [("calculate_extra", {}, "1", False), ("calculate", {}, "1", False)]
    )
    assert tool_accuracy(only_one, task)["desired_tools_used"] == 0.5
    assert "target_tool_not_called" in flags_of(only_one, task)


def test_the_judge_sees_full_arguments_and_long_results_cut_with_a_marker() -> None:
    task = make_task()
    long_result = "row " * 2000
    row = make_trajectory(
        task, [("calculate", {"expression": "6*7", "precision": 3}, long_result, False)]
    )
    steps = build_transcript(row, result_chars=100)
    call = next(s for s in steps if s["heading"].startswith("Tool call"))
    assert '"precision": 3' in call["body"]
    result = next(s for s in steps if s["heading"].startswith("Tool result"))
    assert result["body"].startswith("row row") and "8000 characters in total" in result["body"]


def test_the_keep_rule_names_the_first_failing_check() -> None:
    section = FilterTrajectoriesConfig()
    good = {
        "completeness": Score(reasoning="r", score=5),
        "conciseness": Score(reasoning="r", score=4),
    }
    assert decide_keep({}, good, section) is None
    assert decide_keep({"no_tool_call": True}, good, section) == "no_tool_call"
    low = {**good, "completeness": Score(reasoning="r", score=2)}
    assert decide_keep({}, low, section) == "low_completeness"
    lenient = FilterTrajectoriesConfig(drop_flags=[], min_completeness=1)
    assert decide_keep({"no_tool_call": True}, low, lenient) is None
