"""What a run will cost before it starts: the records of an estimate and the maths over its
per-item figures (tokens, seconds), pure and store-free. flows/estimate.py gathers the figures:
the stage's real plan, prompts rendered and counted, and the store's history.

Each figure is a `Spread`: low = the median (of past items, or of the counted sample), expected =
the mean (what a sum over many items comes to), high = the 90th percentile; low <= expected <=
high always. A deployment with no known price costs `None` ("unknown"), never $0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from toucan.llm.prices import ModelPrice

T = TypeVar("T")

MIN_HISTORY = 3  # past items of a kind before their figures stand for the next ones
SAMPLE_ITEMS = 40  # items whose requests are rendered and counted, per deployment


def evenly(items: Sequence[T], most: int) -> list[T]:
    """At most `most` of `items`, spread evenly over them (a plan's order groups strategies,
    servers and deployments: its head alone would not stand for the rest)."""
    if len(items) <= most:
        return list(items)
    step = len(items) / most
    return [items[int(i * step)] for i in range(most)]


class Spread(BaseModel):
    """A figure's low, expected and high value."""

    model_config = ConfigDict(frozen=True)

    low: float
    expected: float
    high: float

    @classmethod
    def flat(cls, value: float) -> Spread:
        return cls(low=value, expected=value, high=value)

    def times(self, factor: float) -> Spread:
        return Spread(
            low=self.low * factor, expected=self.expected * factor, high=self.high * factor
        )

    def plus(self, other: Spread) -> Spread:
        return Spread(
            low=self.low + other.low,
            expected=self.expected + other.expected,
            high=self.high + other.high,
        )


def spread_of(values: Sequence[float]) -> Spread | None:
    """Median, mean and 90th percentile (linear) of `values`, ordered; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    mean = math.fsum(ordered) / len(ordered)
    p90 = (
        ordered[0]
        if len(ordered) == 1
        else statistics.quantiles(ordered, n=10, method="inclusive")[-1]
    )
    return Spread(low=min(statistics.median(ordered), mean), expected=mean, high=max(p90, mean))


def total(spreads: Sequence[Spread | None]) -> Spread | None:
    """The sum of the spreads; None when any of them is unknown (a part unknown is not $0)."""
    if any(spread is None for spread in spreads):
        return None
    result = Spread.flat(0.0)
    for spread in spreads:
        result = result.plus(spread)  # type: ignore[arg-type]
    return result


def cost(
    price: ModelPrice | None, tokens_in: Spread | None, tokens_out: Spread | None
) -> Spread | None:
    """US dollars of these token counts at `price`; None when the price or a count is unknown."""
    if price is None or tokens_in is None or tokens_out is None:
        return None
    return Spread(
        low=price.cost(tokens_in.low, tokens_out.low),
        expected=price.cost(tokens_in.expected, tokens_out.expected),
        high=price.cost(tokens_in.high, tokens_out.high),
    )


def agent_prompt_tokens(first_prompt: float, turns: float, growth: float) -> float:
    """Prompt tokens of one agent run: every turn resends the opening prompt, and each turn's
    prompt is `growth` tokens (the reply and tool results it added) longer than the last."""
    return turns * first_prompt + growth * turns * (turns - 1) / 2


def budget_turns(max_turns: int) -> Spread:
    """Turns per trajectory without history: at least one call then an answer (2), at most the
    turn budget, expected halfway."""
    low = min(2, max_turns)
    return Spread(low=low, expected=(low + max_turns) / 2, high=max_turns)


def stage_seconds(
    busy_seconds: Spread | None, concurrency: int, calls: float, calls_per_minute: int | None
) -> Spread | None:
    """Wall time of a stage: the items' summed time spread over `concurrency` lanes, and never
    less than its `calls` take at the deployments' summed rpm. None without a measured latency."""
    if busy_seconds is None:
        return None
    spread = busy_seconds.times(1 / max(1, concurrency))
    if calls_per_minute:
        floor = calls / calls_per_minute * 60
        spread = Spread(
            low=max(spread.low, floor),
            expected=max(spread.expected, floor),
            high=max(spread.high, floor),
        )
    return spread


class ModelLine(BaseModel):
    """One deployment's share of a stage."""

    deployment: str
    items: float
    tokens_in: Spread | None = None  # None: unknown (no prompt and no history to go by)
    tokens_out: Spread | None = None
    usd: Spread | None = None  # None: the price or a token count is unknown
    priced: bool = True  # False: nobody knows this deployment's price
    batch_price: bool = False  # priced as a provider batch job
    tokenizer: str = ""
    calls_per_item: float = 1.0
    seconds_per_item: Spread | None = None  # None: no past run measured it
    notes: list[str] = Field(default_factory=list)  # where each figure came from

    def busy_seconds(self) -> Spread | None:
        """Seconds of work in the line's items, summed (before concurrency)."""
        return self.seconds_per_item.times(self.items) if self.seconds_per_item else None


class StageLine(BaseModel):
    """One stage: its items (planned by its real plan now, projected from the stages before it
    in this estimate), its deployments, its wall time."""

    stage: str
    calls_models: bool = True
    planned: int = 0
    already_done: int = 0
    projected: float = 0.0
    concurrency: int = 0
    seconds: Spread | None = None
    models: list[ModelLine] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def items(self) -> float:
        return self.planned + self.projected

    def sum_of(self, field: str) -> Spread | None:
        return total([getattr(line, field) for line in self.models]) if self.models else None


class Estimate(BaseModel):
    """Every stage of the estimate, in running order, and the deployments nobody prices."""

    store: str
    stages: list[StageLine] = Field(default_factory=list)
    unpriced: list[str] = Field(default_factory=list)

    def usd(self) -> Spread | None:
        """The whole run's dollars; None when any part is unknown."""
        lines = [line for stage in self.stages for line in stage.models]
        return total([line.usd for line in lines]) if lines else Spread.flat(0.0)

    def known_usd(self) -> Spread:
        """The dollars of the parts whose price and tokens are known."""
        return total(
            [line.usd for s in self.stages for line in s.models if line.usd]
        ) or Spread.flat(0.0)


TABLE_COLUMNS = (
    "stage",
    "model",
    "items",
    "tokens in",
    "tokens out",
    "$ low",
    "$ expected",
    "$ high",
    "time",
)


def format_usd(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.4f}"


def format_seconds(seconds: float | None) -> str:
    """`45s`, `12m 30s`, `3h 05m`; `-` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def table_cells(
    stage: str,
    model: str,
    items: float,
    tokens: tuple[Spread | None, Spread | None],
    usd: Spread | None,
    seconds: Spread | None,
) -> dict[str, str]:
    """One row of the estimate table: expected tokens, dollars low / expected / high, time."""
    dollars = [format_usd(getattr(usd, k) if usd else None) for k in ("low", "expected", "high")]
    counts = ["unknown" if t is None else f"{t.expected:,.0f}" for t in tokens]
    time = format_seconds(seconds.expected if seconds else None)
    values = (stage, model, f"{items:,.0f}", *counts, *dollars, time)
    return dict(zip(TABLE_COLUMNS, values, strict=True))


def estimate_table(estimate: Estimate) -> list[dict[str, str]]:
    """The estimate as rows (the CLI's table, the pipeline's artifact): one per stage and
    deployment, with the stage's wall time on its first row, then the whole run."""
    zero = Spread.flat(0.0)
    rows = []
    for stage in estimate.stages:
        if not stage.calls_models:
            continue
        if not stage.models:
            rows.append(table_cells(stage.stage, "-", 0, (zero, zero), zero, None))
        for index, line in enumerate(stage.models):
            name, seconds = (stage.stage, stage.seconds) if index == 0 else ("", None)
            tokens = (line.tokens_in, line.tokens_out)
            rows.append(table_cells(name, line.deployment, line.items, tokens, line.usd, seconds))
    lines = [line for stage in estimate.stages for line in stage.models]
    tokens = (total([m.tokens_in for m in lines]), total([m.tokens_out for m in lines]))
    seconds = total([s.seconds for s in estimate.stages if s.models])
    items = sum(m.items for m in lines)
    rows.append(table_cells("total", "", items, tokens, estimate.usd(), seconds))
    return rows
