"""`toucan estimate` and the pipeline's dry run: for each stage that would run, its items, tokens,
dollars and wall time, with no model asked and nothing written.

Items: the stage's real plan on the store now (flows/estimate_stages.py), plus what the stages
before it in this estimate will add (their items x the yield the store's history shows).
Prompt tokens: a sample of the planned items' first requests, rendered by the stage's own prompt
functions and counted with each deployment's tokenizer (LiteLLM's token_counter), scaled by how
the provider counted the same requests of past items (recorded ÷ our count): that covers
message overheads, structured-output schemas, repairs and a tokenizer that only approximates.
Completion tokens, calls, turns and seconds per item come from the stage's history (per
deployment, and per template for completions, when there is enough), else from max_tokens and
the turn budget (upper bounds, said so). Dollars: toucan/llm/prices.py; unknown stays unknown.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flows.estimate_history import PastItem, read_past_items
from flows.estimate_lines import LineInputs, model_line
from flows.estimate_stages import PROBES, Probe, ProbeItem
from toucan.config import Settings
from toucan.estimate import (
    MIN_HISTORY,
    SAMPLE_ITEMS,
    Estimate,
    StageLine,
    evenly,
    stage_seconds,
    total,
)
from toucan.llm.prices import count_prompt_tokens, describe_tokenizer
from toucan.llm.providers import load_litellm
from toucan.llm.router import LlmRouter
from toucan.records import Task
from toucan.store import Store

NOT_STARTED = "http://127.0.0.1:9/v1"  # the discard port: nothing is sent there
PAST_SAMPLE = 60  # past items re-rendered per stage, to compare our count with the provider's


# The `local` profile's embedded model has no tokenizer LiteLLM knows; the deployments' own
# names would make LiteLLM fetch Llama's from Hugging Face (and retry for ~25 s offline).
EMBEDDED_COUNT_MODEL = "gpt-3.5-turbo"  # counted with tiktoken's cl100k_base


class TokenCounter:
    """Counts a request's prompt tokens with a deployment's tokenizer."""

    def __init__(self, router: LlmRouter) -> None:
        self.router = router
        self.local = router.models.route_to_local

    def model_string(self, deployment: str) -> str:
        return EMBEDDED_COUNT_MODEL if self.local else self.router.model_strings[deployment]

    def count(self, deployment: str, request: tuple[Any, Any] | None) -> int:
        if request is None:
            return 0
        messages, tools = request
        return count_prompt_tokens(self.model_string(deployment), messages, tools)

    def tokenizer(self, deployment: str) -> str:
        model = self.model_string(deployment)
        own = model.startswith("openai/") and self.router.deployments[deployment].api_base is None
        return describe_tokenizer(model, own and not self.local)


def calibrate(
    probe: Probe, past: list[PastItem], store: Store, settings: Settings, counter: TokenCounter
) -> dict[str | None, tuple[float, int]]:
    """Per deployment (None: the whole stage), the provider's prompt tokens over our count of
    the same past requests, and how many past items that rests on. For an agent stage the
    opening request only (the growth per turn is taken from history as it was)."""
    usable = [p for p in past if p.calls and p.deployment in counter.router.model_strings]
    if probe.past_requests is None or not usable:
        return {}
    sample = evenly(usable, PAST_SAMPLE)
    requests = probe.past_requests(store, settings, [p.item_id for p in sample])
    sums: dict[str | None, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for past_item in sample:
        request = requests.get(past_item.item_id)
        counted = counter.count(past_item.deployment, request) if request else 0  # type: ignore[arg-type]
        if not counted:
            continue
        recorded = past_item.first_tokens_in if probe.agent else past_item.tokens_in
        for key in (past_item.deployment, None):
            cell = sums[key]
            cell[0], cell[1], cell[2] = cell[0] + recorded, cell[1] + counted, cell[2] + 1
    return {
        key: (recorded / counted, int(n))
        for key, (recorded, counted, n) in sums.items()
        if n >= MIN_HISTORY
    }


def assign(probe: Probe, items: list[ProbeItem], router: LlmRouter) -> dict[str, list[ProbeItem]]:
    """Planned items by the deployment that answers them (the router's own pick per item)."""
    by_deployment: dict[str, list[ProbeItem]] = defaultdict(list)
    for item in items:
        name = item.deployment or router.pick_deployment(probe.group, item.item_id)
        by_deployment[name].append(item)
    return by_deployment


def shares(
    probe: Probe, planned: dict[str, list[ProbeItem]], router: LlmRouter
) -> dict[str, float]:
    """How projected items split over deployments: as the planned ones do, else by the group's
    weights (a teacher runs every task: equal shares)."""
    counts = {name: len(items) for name, items in planned.items()}
    if not counts:
        group = router.models.group(probe.group)
        counts = {d.name: (1.0 if probe.group == "teacher" else max(0.0, d.weight)) for d in group}
    whole = sum(counts.values()) or 1.0
    return {name: count / whole for name, count in counts.items()}


@dataclass
class Carried:
    """What a stage of the estimate hands the stages after it: its items, and a sample of the
    tasks it passes on (for rendering the requests those tasks will make)."""

    items: float
    tasks: list[Task] = field(default_factory=list)


def estimate_stage(
    name: str,
    store: Store,
    settings: Settings,
    params: dict[str, Any],
    carried: dict[str, Carried],
    counter: TokenCounter,
) -> tuple[StageLine, Carried]:
    """One model-calling stage of the estimate (`carried`: what the stages before it hand on)."""
    probe = PROBES[name]
    probed = probe.plan(store, settings, params)
    line = StageLine(stage=name, planned=len(probed.items), already_done=probed.already_done)
    upstream, stand_ins = None, []
    if probe.feeds is not None and probe.feeds[0] in carried:
        upstream = carried[probe.feeds[0]]
        factor, source = probe.feeds[1](store, settings, params)
        line.projected = upstream.items * factor
        line.notes.append(f"{line.projected:.1f} items projected from {probe.feeds[0]}: {source}")
        if probe.stand_ins is not None and upstream.tasks and line.projected:
            stand_ins = probe.stand_ins(upstream.tasks, store, settings, params)
    past = read_past_items(store, name)
    ratios = calibrate(probe, past, store, settings, counter)
    router = counter.router
    planned, standing = assign(probe, probed.items, router), assign(probe, stand_ins, router)
    split = shares(probe, planned or standing, router)
    for deployment in sorted(set(planned) | {d for d, s in split.items() if s and line.projected}):
        own_past = [p for p in past if p.deployment == deployment]
        inputs = LineInputs(
            stage=name,
            deployment=deployment,
            agent=probe.agent,
            planned=planned.get(deployment, []),
            projected=line.projected * split.get(deployment, 0.0),
            stand_ins=standing.get(deployment, []),
            past=own_past if len(own_past) >= MIN_HISTORY else past,
            ratio=ratios.get(deployment) or ratios.get(None),
            renders=probe.renders,
        )
        line.models.append(model_line(inputs, settings, counter))
    line.concurrency = stage_concurrency(
        name, probe, probed.concurrency if probed.items else 0, settings
    )
    calls = sum(m.items * m.calls_per_item for m in line.models)
    busy = total([m.busy_seconds() for m in line.models]) if line.models else None
    line.seconds = stage_seconds(busy, line.concurrency, calls, group_rpm(probe, settings))
    if line.seconds is None and line.models:
        line.notes.append("time unknown: no past run of this stage measured its latency")
    handed = probed.handed + (upstream.tasks if upstream and probe.passes_on else [])
    return line, Carried(line.items, evenly(handed, SAMPLE_ITEMS))


def stage_concurrency(name: str, probe: Probe, planned: int, settings: Settings) -> int:
    """Items in flight: the plan's lanes, else the stage's configured concurrency; never more
    than the group's deployments take at once."""
    configured = {
        "synthesize": settings.synthesize.concurrency,
        "diversify": settings.synthesize.concurrency,
        "filter_tasks": settings.filter_tasks.concurrency,
        "filter_trajectories": settings.filter_trajectories.concurrency,
    }
    lanes = planned or min(
        configured.get(name, settings.trajectories.concurrency), settings.max_in_flight
    )
    group_cap = sum(d.max_concurrency for d in settings.models.group(probe.group))
    return max(1, min(lanes, group_cap))


def group_rpm(probe: Probe, settings: Settings) -> int | None:
    """Requests per minute the group's deployments take together; None when any is unlimited."""
    limits = [d.rpm for d in settings.models.group(probe.group)]
    return None if any(limit is None for limit in limits) else sum(limits)  # type: ignore[misc]


def estimate_run(
    store: Store, settings: Settings, stages: Sequence[str], params: dict[str, dict[str, Any]]
) -> Estimate:
    """The estimate of running `stages` (registry names, in running order) on `store` with
    `params[stage]` as each stage flow's parameters. Reads the store, never writes it."""
    load_litellm()  # the tokenizers of LiteLLM's token_counter
    # the router is asked for names, prices and requests, never to send: the `local` profile's
    # embedded model is not started, and its url (NOT_STARTED) is never called
    local_url = NOT_STARTED if settings.models.route_to_local else None
    counter = TokenCounter(LlmRouter(settings.models, local_base_url=local_url))
    estimate = Estimate(store=str(store.path))
    carried: dict[str, Carried] = {}
    for name in stages:
        if name not in PROBES:
            estimate.stages.append(StageLine(stage=name, calls_models=False))
            continue
        if not store.path.exists():
            line = StageLine(stage=name, notes=["no store yet: run `toucan onboard` first"])
        else:
            line, carried[name] = estimate_stage(
                name, store, settings, params.get(name, {}), carried, counter
            )
        estimate.stages.append(line)
    estimate.unpriced = sorted(
        {m.deployment for s in estimate.stages for m in s.models if not m.priced}
    )
    return estimate
