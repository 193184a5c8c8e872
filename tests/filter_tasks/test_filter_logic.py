"""Stage 3 pure parts: the judge schema, thresholds, keep decisions, range checks."""

from __future__ import annotations

import pytest

from tasks.filter_tasks import (
    DIMENSIONS,
    JudgeReply,
    check_thresholds,
    decide_keep,
)
from tasks.judge import out_of_range, rating_from_reply
from toucan.errors import ConfigError
from toucan.llm.replies import LlmReply
from toucan.records import Score, TaskRating


def scores(value: int, **overrides: int) -> dict[str, Score]:
    return {d: Score(reasoning="r", score=overrides.get(d, value)) for d in DIMENSIONS}


def test_the_judge_schema_puts_reasoning_before_the_score_for_all_six_dimensions() -> None:
    schema = JudgeReply.model_json_schema()
    assert list(schema["properties"]) == list(DIMENSIONS)
    score_schema = schema["$defs"]["JudgedScore"]
    assert list(score_schema["properties"]) == ["reasoning", "score"]
    assert (
        score_schema["properties"]["score"]["minimum"],
        score_schema["properties"]["score"]["maximum"],
    ) == (1, 5)


def test_unknown_threshold_names_fail_and_missing_ones_default_to_one() -> None:
    assert check_thresholds({"question_quality": 4})["stability"] == 1
    with pytest.raises(ConfigError):
        check_thresholds({"question_qualty": 4})


def test_a_task_is_kept_only_when_every_dimension_reaches_its_threshold() -> None:
    thresholds = check_thresholds({"question_quality": 3, "stability": 2})
    assert decide_keep(scores(3), thresholds) is None
    assert decide_keep(scores(3, question_quality=2), thresholds) == "low_question_quality"
    assert decide_keep(scores(3, stability=1), thresholds) == "low_stability"


def test_scores_outside_one_to_five_are_found() -> None:
    assert out_of_range(scores(3, verifiable=0, stability=7)) == ["verifiable", "stability"]


def test_an_out_of_range_reply_becomes_an_error_row_keeping_the_raw_reply() -> None:
    raw = '{"...": 7}'
    parsed = JudgeReply.model_validate(
        {d: {"reasoning": "r", "score": 7 if d == "stability" else 4} for d in DIMENSIONS}
    )
    rating = rating_from_reply(
        TaskRating(rating_id="r1", task_id="t1", judge="j"),
        parsed,
        LlmReply(text=raw, deployment="GPT-4o-mini", model="openai/gpt-4o-mini"),
        DIMENSIONS,
        lambda scores: decide_keep(scores, check_thresholds({})),
    )
    assert (rating.status, rating.reason, rating.raw_reply, rating.keep) == (
        "error",
        "score_out_of_range",
        raw,
        False,
    )
    assert rating.scores["stability"].score == 7
