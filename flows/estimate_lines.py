"""One deployment's share of a stage in an estimate: tokens, dollars and seconds of its planned
and projected items, from the counted sample of their requests and the stage's history
(flows/estimate.py gathers the inputs; toucan/estimate.py holds the maths)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flows.estimate_history import PastItem
from flows.estimate_stages import ProbeItem
from toucan.config import Settings
from toucan.estimate import (
    MIN_HISTORY,
    SAMPLE_ITEMS,
    ModelLine,
    Spread,
    agent_prompt_tokens,
    budget_turns,
    cost,
    evenly,
    spread_of,
    total,
)
from toucan.llm.batch_items import use_batch
from toucan.llm.prices import ModelPrice, batch_price, completion_allowance
from toucan.llm.replies import LlmRequest

if TYPE_CHECKING:
    from flows.estimate import TokenCounter
    from toucan.llm.router import LlmRouter


@dataclass
class LineInputs:
    stage: str
    deployment: str
    agent: bool
    planned: list[ProbeItem]
    projected: float
    stand_ins: list[ProbeItem]  # rendered for the projected items (from earlier stages' plans)
    past: list[PastItem]  # the deployment's own history when it has enough, else the stage's
    ratio: tuple[float, int] | None  # provider's count / ours, over this many past items
    renders: bool = True  # the stage can render its items' requests


@dataclass
class Sample:
    """Our count of sampled requests (0: the item makes no call); None: nothing rendered."""

    counts: list[int] | None

    @property
    def calling(self) -> list[int]:
        return [count for count in self.counts or [] if count]

    def call_share(self, past: list[PastItem]) -> float:
        """The share of items that call a model: the sample's, else the history's, else 1."""
        if self.counts:
            return len(self.calling) / len(self.counts)
        return sum(1 for p in past if p.calls) / len(past) if past else 1.0

    def opening(self, ratio: float) -> float | None:
        """The mean prompt of the calling items, scaled to the provider's count."""
        return sum(self.calling) / len(self.calling) * ratio if self.calling else None


def count_sample(items: list[ProbeItem], deployment: str, counter: TokenCounter) -> Sample:
    """Render and count at most SAMPLE_ITEMS of `items`, spread over them."""
    if not items or items[0].render is None:
        return Sample(None)
    return Sample([counter.count(deployment, i.render()) for i in evenly(items, SAMPLE_ITEMS)])  # type: ignore[misc]


def line_price(
    inputs: LineInputs, items: float, settings: Settings, router: LlmRouter
) -> tuple[ModelPrice | None, bool]:
    """(the price of the line's calls, whether that is the provider's batch price)."""
    mode = settings.stage_mode(inputs.stage)
    local = settings.models.route_to_local
    if mode is not None and use_batch(mode[0], math.ceil(items), mode[1]):
        from toucan.llm.batch_api import has_batch_api  # imports LiteLLM, loaded by now

        deployment = router.deployments[inputs.deployment]
        if has_batch_api(deployment, local):
            return batch_price(deployment, local), True
    return router.prices[inputs.deployment], False


def model_line(inputs: LineInputs, settings: Settings, counter: TokenCounter) -> ModelLine:
    router = counter.router
    items = len(inputs.planned) + inputs.projected
    price, batch = line_price(inputs, items, settings, router)
    planned = count_sample(inputs.planned, inputs.deployment, counter)
    stand_in = count_sample(inputs.stand_ins, inputs.deployment, counter)
    if stand_in.counts is None:
        stand_in = planned
    ratio = inputs.ratio[0] if inputs.ratio else 1.0
    allowance = completion_allowance(
        router.build_request(inputs.deployment, LlmRequest([])),
        router.prices[inputs.deployment],
    )
    tokenizer = counter.tokenizer(inputs.deployment)
    notes = sources(inputs, planned, stand_in, tokenizer)
    figures = agent_figures if inputs.agent else single_call_figures
    job = Figuring(inputs, planned, stand_in, ratio, allowance, settings, notes)
    tokens_in, tokens_out, calls = figures(job)
    return ModelLine(
        deployment=inputs.deployment,
        items=items,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        usd=cost(price, tokens_in, tokens_out),
        priced=router.prices[inputs.deployment] is not None,
        batch_price=batch,
        tokenizer=tokenizer,
        calls_per_item=calls,
        seconds_per_item=spread_of([p.seconds for p in inputs.past]),
        notes=notes,
    )


def sources(inputs: LineInputs, planned: Sample, stand_in: Sample, tokenizer: str) -> list[str]:
    """Where the prompt figures come from, in words."""
    rendered = len(planned.counts or []) + (
        len(stand_in.counts or []) if stand_in is not planned else 0
    )
    if not rendered:
        why = "no item to render" if inputs.renders else "its prompts grow turn by turn"
        if not inputs.past:
            return [f"tokens unknown: {why}, and no past run of this stage"]
        return [f"prompt tokens: history of {len(inputs.past)} past items ({why})"]
    notes = [f"prompt tokens: {rendered} requests rendered, counted with {tokenizer}"]
    if stand_in is not planned:
        notes.append(
            "projected items rendered from what the stages before plan (questions not written "
            "yet stand in at their past or usual length)"
        )
    if inputs.ratio:
        notes.append(
            f"scaled x{inputs.ratio[0]:.2f}: the provider's count over ours on "
            f"{inputs.ratio[1]} past items"
        )
    else:
        notes.append("not scaled: no past call of a configured deployment to compare with")
    return notes


def summed(parts: list[tuple[float, Spread | None]]) -> Spread | None:
    """Σ items x per-item spread over the parts that have items; None when a part with items
    has an unknown spread (unknown is not zero)."""
    spreads = [spread.times(count) if spread else None for count, spread in parts if count]
    return total(spreads) if spreads else Spread.flat(0.0)


@dataclass
class Figuring:
    """What a line's figures are worked out from."""

    inputs: LineInputs
    planned: Sample  # of the planned items' requests
    stand_in: Sample  # of the projected items' (else the planned sample)
    ratio: float  # the provider's count over ours (1 when unknown)
    allowance: int  # completion tokens one call may be billed for
    settings: Settings
    notes: list[str]


Figures = tuple[Spread | None, Spread | None, float]  # tokens in, tokens out, calls per item


def single_call_figures(job: Figuring) -> Figures:
    """A stage making one call per item (and a repair now and then, which the history and the
    scaling both carry)."""
    inputs, ratio, allowance, notes = job.inputs, job.ratio, job.allowance, job.notes
    past, called = inputs.past, [p for p in inputs.past if p.calls]
    history_in = spread_of([p.tokens_in for p in past])

    def prompt(sample: Sample) -> Spread | None:
        return spread_of(sample.counts).times(ratio) if sample.counts else history_in

    planned, stand_in = job.planned, job.stand_in
    tokens_in = summed(
        [(len(inputs.planned), prompt(planned)), (inputs.projected, prompt(stand_in))]
    )
    by_template: dict[str | None, int] = defaultdict(int)
    for item in inputs.planned:
        by_template[item.template] += 1
    # per template where the history has enough of it (synthesis strategies differ)
    share = stand_in.call_share(past)
    parts = [(inputs.projected, completion(called, allowance, notes).times(share))]
    for template, count in by_template.items():
        own = [p for p in called if p.template == template]
        pool = own if len(own) >= MIN_HISTORY else called
        parts.append((count, completion(pool, allowance, notes).times(planned.call_share(past))))
    calls = sum(p.calls for p in past) / len(past) if past else planned.call_share(past)
    return tokens_in, summed(parts), calls


def completion(pool: list[PastItem], allowance: int, notes: list[str]) -> Spread:
    """Completion tokens per calling item: the history's (median, mean, p90), else max_tokens."""
    found = spread_of([p.tokens_out for p in pool])
    if found is not None:
        note = f"completion tokens: history of {len(pool)} past items (median / mean / p90)"
    else:
        found = Spread.flat(allowance)
        note = f"completion tokens: max_tokens {allowance} per call (no history: an upper bound)"
    if note not in notes:
        notes.append(note)
    return found


def agent_figures(job: Figuring) -> Figures:
    """An agent stage: each turn resends the opening prompt plus what earlier turns added (the
    history's turns and growth, else the turn budget's)."""
    inputs, ratio, allowance, notes = job.inputs, job.ratio, job.allowance, job.notes
    past, section = inputs.past, job.settings.trajectories
    turns = budget_turns(section.max_turns)
    growth = allowance + section.tool_result_token_budget

    def prompt(sample: Sample) -> Spread | None:
        opening = sample.opening(ratio)
        if past and opening is not None:
            # this item's opening resent as often as a past item's turns, plus that item's
            # own growth (what its turns added beyond resending its opening)
            return spread_of(
                [p.calls * opening + p.tokens_in - p.calls * p.first_tokens_in for p in past]
            )
        if past:
            return spread_of([p.tokens_in for p in past])
        if opening is None:
            return None
        return Spread(
            **{
                bound: agent_prompt_tokens(opening, getattr(turns, bound), growth)
                for bound in ("low", "expected", "high")
            }
        )

    if past:
        per_out, calls = (
            spread_of([p.tokens_out for p in past]),
            sum(p.calls for p in past) / len(past),
        )
        notes.append(f"turns and growth per turn: history of {len(past)} past items")
    else:
        per_out, calls = turns.times(allowance), turns.expected
        notes.append(
            f"no history: {turns.low:.0f}-{turns.high:.0f} turns (the turn budget), each adding "
            f"up to {growth} tokens (max_tokens + the tool result budget): an upper bound"
        )
    tokens_in = summed(
        [(len(inputs.planned), prompt(job.planned)), (inputs.projected, prompt(job.stand_in))]
    )
    tokens_out = summed([(len(inputs.planned) + inputs.projected, per_out)])
    return tokens_in, tokens_out, calls
