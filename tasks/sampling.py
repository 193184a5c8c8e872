"""Planning stage 2: which servers, how many target tools and which generator, per task slot.

Pure and seeded: the same servers, settings and seed always give the same plan, so task ids
(made from the slot) are stable and a re-run finds its finished slots in the store. One
`random.Random(seed)` drives every draw (TOUCAN's step 1.1 left Python's `random` unseeded).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from toucan.config import ModelDeployment
from toucan.ids import make_id
from toucan.records import Server, Tool

Strategy = Literal["single_server", "multi_server", "featured"]
STRATEGIES: tuple[Strategy, ...] = ("single_server", "multi_server", "featured")
Allocation = Literal["single", "random", "same_domain", "different_domains", "featured"]
MULTI_SERVER_SIZES = (2, 3)
MIN_MULTI_TOOLS = 2


class ServerView(BaseModel):
    """A server with its current tools: what a generator or the judge is shown."""

    model_config = ConfigDict(frozen=True)

    server: Server
    tools: tuple[Tool, ...]

    @property
    def server_id(self) -> str:
        return self.server.server_id

    @property
    def name(self) -> str:
        return self.server.name


class TaskSlot(BaseModel):
    """One task to synthesize; `task_id` is known before any model call (resume anti-join)."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    strategy: Strategy
    allocation: Allocation
    server_ids: tuple[str, ...]  # servers shown to the generator
    num_tools: int
    generator: str  # deployment name in the `generator` model group
    seed: int
    slot: int  # position in the plan of this strategy
    fallback: str | None = None  # why the allocation fell back to random, when it did


class PlanRequest(BaseModel):
    strategies: list[Strategy] = Field(default_factory=lambda: list(STRATEGIES))
    per_server: int | None = 2
    limit: int | None = None
    seed: int = 0
    sampling: Literal["uniform", "usage"] = "uniform"
    max_tools: int = 3
    allocations: list[Literal["random", "same_domain", "different_domains"]] = Field(
        default_factory=lambda: ["random", "same_domain", "different_domains"]
    )
    featured_servers: int = 8


def make_task_id(
    strategy: str, server_ids: Sequence[str], num_tools: int, generator: str, seed: int, slot: int
) -> str:
    return make_id("task", strategy, sorted(server_ids), num_tools, generator, seed, slot)


def count_slots(request: PlanRequest, n_servers: int, strategy: Strategy) -> int:
    """How many tasks a strategy gets: --limit split evenly, else per_server x servers."""
    if request.limit is not None:
        share, extra = divmod(request.limit, len(request.strategies))
        return share + (1 if request.strategies.index(strategy) < extra else 0)
    per_server = request.per_server or 0
    if strategy == "featured":  # each prompt shows several servers: about N showings per server
        shown = max(1, min(request.featured_servers, n_servers))
        return math.ceil(per_server * n_servers / shown)
    return per_server * n_servers


def pick_anchor(
    rng: random.Random, servers: Sequence[ServerView], index: int, request: PlanRequest
) -> ServerView:
    """Uniform: every server in turn (per-server mode) or a uniform draw (--limit);
    usage: a draw weighted by 1 + usage_count. Drawn per slot, so a longer plan extends a
    shorter one with the same seed instead of reshuffling it."""
    if request.sampling == "usage":
        weights = [1 + max(0, view.server.usage_count) for view in servers]
        return rng.choices(list(servers), weights=weights, k=1)[0]
    if request.limit is None:
        return servers[index % len(servers)]
    return rng.choice(list(servers))


def assign_generators(generators: Sequence[ModelDeployment]) -> Iterator[str]:
    """Smooth weighted round-robin, endless: exact shares by `weight`, interleaved,
    deterministic (the first n names are the same whatever n). ValueError, at the first name,
    when no deployment has a positive weight."""
    active = [g for g in generators if g.weight > 0]
    if not active:
        raise ValueError("no generator deployment has a positive weight")
    total = sum(g.weight for g in active)
    current = [0.0] * len(active)
    while True:
        for index, deployment in enumerate(active):
            current[index] += deployment.weight
        best = max(range(len(active)), key=lambda i: current[i])
        current[best] -= total
        yield active[best].name


def pick_partners(
    rng: random.Random,
    anchor: ServerView,
    servers: Sequence[ServerView],
    size: int,
    allocation: str,
) -> tuple[list[ServerView], str | None]:
    """Servers joining `anchor` in a multi-server task; falls back to random with a reason."""
    others = [view for view in servers if view.server_id != anchor.server_id]
    if allocation == "same_domain":
        pool = [
            v for v in others if anchor.server.domain and v.server.domain == anchor.server.domain
        ]
        if len(pool) >= size - 1:
            return rng.sample(pool, size - 1), None
        return rng.sample(others, size - 1), "too_few_servers_in_domain"
    if allocation == "different_domains":
        by_domain: dict[str, list[ServerView]] = {}
        for view in others:
            if view.server.domain and view.server.domain != anchor.server.domain:
                by_domain.setdefault(view.server.domain, []).append(view)
        if len(by_domain) >= size - 1:
            domains = rng.sample(sorted(by_domain), size - 1)
            return [rng.choice(by_domain[d]) for d in domains], None
        return rng.sample(others, size - 1), "too_few_domains"
    return rng.sample(others, size - 1), None


def plan_strategy(
    rng: random.Random,
    strategy: Strategy,
    servers: Sequence[ServerView],
    featured: Sequence[ServerView],
    request: PlanRequest,
) -> Iterator[tuple[Allocation, list[ServerView], int, str | None]]:
    """The strategy's slots one by one (allocation, servers shown, tools, fallback), each
    drawn as it is asked for."""
    count = count_slots(request, len(servers), strategy)
    max_tools = max(1, request.max_tools)
    if strategy == "single_server":
        for index in range(count):
            anchor = pick_anchor(rng, servers, index, request)
            num_tools = min(rng.randint(1, max_tools), len(anchor.tools))
            yield "single", [anchor], num_tools, None
    elif strategy == "multi_server":
        if len(servers) < 2:
            return
        for index in range(count):
            anchor = pick_anchor(rng, servers, index, request)
            allocation = rng.choice(request.allocations)
            size = min(rng.choice(MULTI_SERVER_SIZES), len(servers))
            partners, fallback = pick_partners(rng, anchor, servers, size, allocation)
            num_tools = rng.randint(MIN_MULTI_TOOLS, max(MIN_MULTI_TOOLS, max_tools))
            alloc: Allocation = "random" if fallback else allocation
            yield alloc, [anchor, *partners], num_tools, fallback
    else:
        pool = list(featured)
        if len(pool) < 2:
            return
        for _ in range(count):
            shown = rng.sample(pool, min(request.featured_servers, len(pool)))
            num_tools = rng.randint(MIN_MULTI_TOOLS, max(MIN_MULTI_TOOLS, max_tools))
            yield "featured", shown, num_tools, None


def featured_pool(servers: Sequence[ServerView], size: int) -> list[ServerView]:
    """Servers marked featured; when fewer than `size`, topped up by usage (then by id)."""
    marked = [v for v in servers if v.server.featured]
    if len(marked) >= size:
        return marked
    rest = sorted(
        (v for v in servers if not v.server.featured),
        key=lambda v: (-v.server.usage_count, v.server_id),
    )
    return marked + rest[: size - len(marked)]


def plan_slots(
    servers: Sequence[ServerView], generators: Sequence[ModelDeployment], request: PlanRequest
) -> list[TaskSlot]:
    """The whole plan of a run, in a fixed order (strategy, then slot)."""
    return list(iter_slots(servers, generators, request))


def iter_slots(
    servers: Sequence[ServerView], generators: Sequence[ModelDeployment], request: PlanRequest
) -> Iterator[TaskSlot]:
    """The plan of `plan_slots`, slot by slot, each made as it is asked for: a plan of any
    length in flat memory (a run streams it: flows/synthesize.py)."""
    usable = sorted((v for v in servers if v.tools), key=lambda v: v.server_id)
    if not usable:
        return
    featured = featured_pool(usable, request.featured_servers)
    for strategy in request.strategies:
        rng = random.Random(f"{request.seed}:{strategy}")
        plans = plan_strategy(rng, strategy, usable, featured, request)
        names = assign_generators(generators)
        for index, (allocation, shown, num_tools, fallback) in enumerate(plans):
            server_ids = tuple(v.server_id for v in shown)
            generator = next(names)
            yield TaskSlot(
                task_id=make_task_id(
                    strategy, server_ids, num_tools, generator, request.seed, index
                ),
                strategy=strategy,
                allocation=allocation,
                server_ids=server_ids,
                num_tools=num_tools,
                generator=generator,
                seed=request.seed,
                slot=index,
                fallback=fallback,
            )
