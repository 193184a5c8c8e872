"""The estimate's maths (toucan/estimate.py): spreads, unknown prices, agent prompts, wall time."""

from __future__ import annotations

import pytest

from toucan.estimate import (
    Estimate,
    ModelLine,
    Spread,
    StageLine,
    agent_prompt_tokens,
    budget_turns,
    cost,
    estimate_table,
    evenly,
    format_seconds,
    spread_of,
    stage_seconds,
    total,
)
from toucan.llm.prices import ModelPrice

PRICE = ModelPrice(input_per_token=1e-6, output_per_token=2e-6)


def test_a_spread_is_median_mean_and_p90_and_stays_ordered() -> None:
    spread = spread_of([10, 10, 10, 10, 100])
    assert spread == Spread(low=10, expected=28, high=64)
    skewed_low = spread_of([1, 100, 100])  # the median above the mean: low is the mean
    assert skewed_low is not None and skewed_low.low == skewed_low.expected == 67
    assert spread_of([]) is None
    assert spread_of([5]) == Spread.flat(5)


def test_an_unknown_price_or_count_is_unknown_never_zero() -> None:
    tokens = Spread.flat(1000)
    assert cost(None, tokens, tokens) is None
    assert cost(PRICE, None, tokens) is None
    assert cost(PRICE, tokens, tokens) == Spread.flat(0.003)
    assert total([Spread.flat(1), None]) is None
    assert total([Spread.flat(1), Spread.flat(2)]) == Spread.flat(3)


def test_an_agent_run_resends_its_opening_every_turn_and_grows() -> None:
    # turns 1..3 send 100, 150, 200 tokens
    assert agent_prompt_tokens(100, 3, 50) == 450
    assert agent_prompt_tokens(100, 1, 50) == 100
    assert budget_turns(10) == Spread(low=2, expected=6, high=10)
    assert budget_turns(1) == Spread.flat(1)


def test_wall_time_spreads_over_the_lanes_and_never_beats_the_rate_limit() -> None:
    busy = Spread(low=100, expected=200, high=400)
    assert stage_seconds(busy, 10, calls=10, calls_per_minute=None) == busy.times(0.1)
    # 600 calls at 60 a minute take 10 minutes, however many lanes
    assert stage_seconds(busy, 10, calls=600, calls_per_minute=60) == Spread.flat(600)
    assert stage_seconds(None, 10, calls=1, calls_per_minute=None) is None
    assert [format_seconds(s) for s in (None, 42, 750, 11_100)] == ["-", "42s", "12m 30s", "3h 05m"]


def test_a_sample_is_spread_over_the_whole_plan() -> None:
    assert evenly(list(range(100)), 4) == [0, 25, 50, 75]
    assert evenly([1, 2], 4) == [1, 2]


@pytest.mark.parametrize("judge_price", [None, PRICE])
def test_the_table_says_unknown_for_an_unpriced_deployment_and_totals_only_what_is_known(
    judge_price: ModelPrice | None,
) -> None:
    tokens = Spread.flat(1000)

    def line(name: str, price: ModelPrice | None) -> ModelLine:
        usd = cost(price, tokens, tokens)
        return ModelLine(
            deployment=name,
            items=2,
            tokens_in=tokens,
            tokens_out=tokens,
            usd=usd,
            priced=price is not None,
        )

    priced, judge = line("Gen", PRICE), line("Judge", judge_price)
    estimate = Estimate(
        store="s.duckdb",
        stages=[
            StageLine(stage="synthesize", planned=2, models=[priced], seconds=Spread.flat(90)),
            StageLine(stage="filter_tasks", projected=2, models=[judge]),
            StageLine(stage="export", calls_models=False),
        ],
    )
    rows = estimate_table(estimate)
    assert [r["stage"] for r in rows] == ["synthesize", "filter_tasks", "total"]
    assert rows[0]["time"] == "1m 30s" and rows[0]["$ expected"] == "0.0030"
    if judge_price is None:
        assert rows[1]["$ expected"] == rows[2]["$ expected"] == "unknown"
        assert estimate.usd() is None and estimate.known_usd() == Spread.flat(0.003)
    else:
        assert rows[2]["$ expected"] == "0.0060" and rows[2]["tokens in"] == "2,000"
