"""Stage 2 planning: seeded, prefix-stable, weighted generators, allocations that hold."""

from __future__ import annotations

from collections import Counter

from tasks.sampling import PlanRequest, ServerView, plan_slots
from tests.trajectories.helpers import ok_server
from toucan.config import ModelDeployment
from toucan.records import Tool


def view(
    name: str, domain: str | None, tools: int = 3, featured: bool = False, usage: int = 0
) -> ServerView:
    server = ok_server(f"s_{name}", name, domain=domain, featured=featured, usage_count=usage)
    return ServerView(
        server=server,
        tools=tuple(
            Tool(
                tool_id=f"t_{name}_{i}",
                server_id=server.server_id,
                name=f"tool{i}",
                schema_hash="h",
            )
            for i in range(tools)
        ),
    )


SERVERS = [
    view("a", "Weather"),
    view("b", "Weather"),
    view("c", "Finance", featured=True),
    view("d", "Gaming", featured=True),
    view("e", "Education", tools=1),
]
GENERATORS = [ModelDeployment(name=n, model=f"openai/{n}") for n in ("g1", "g2", "g3")]
BY_ID = {v.server_id: v for v in SERVERS}


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    request = PlanRequest(limit=30, seed=7)
    first = plan_slots(SERVERS, GENERATORS, request)
    assert first == plan_slots(list(reversed(SERVERS)), GENERATORS, request)
    other = plan_slots(SERVERS, GENERATORS, request.model_copy(update={"seed": 8}))
    assert [s.task_id for s in first] != [s.task_id for s in other]
    assert len({s.task_id for s in first}) == 30


def test_a_longer_limit_extends_a_shorter_plan_instead_of_reshuffling() -> None:
    short = plan_slots(
        SERVERS, GENERATORS, PlanRequest(limit=6, seed=1, strategies=["single_server"])
    )
    long = plan_slots(
        SERVERS, GENERATORS, PlanRequest(limit=12, seed=1, strategies=["single_server"])
    )
    assert [s.server_ids for s in long[:6]] == [s.server_ids for s in short]


def test_per_server_uniform_anchors_every_server_n_times() -> None:
    slots = plan_slots(SERVERS, GENERATORS, PlanRequest(per_server=2, strategies=["single_server"]))
    assert Counter(s.server_ids[0] for s in slots) == {v.server_id: 2 for v in SERVERS}
    assert all(1 <= s.num_tools <= len(BY_ID[s.server_ids[0]].tools) for s in slots)


def test_usage_sampling_favours_used_servers() -> None:
    servers = [view("busy", "x", usage=1000), view("quiet", "y", usage=0)]
    slots = plan_slots(
        servers, GENERATORS, PlanRequest(limit=200, sampling="usage", strategies=["single_server"])
    )
    counts = Counter(s.server_ids[0] for s in slots)
    assert counts["s_busy"] > 150


def test_generators_share_the_work_by_weight() -> None:
    weighted = [
        ModelDeployment(name="big", model="m", weight=3),
        ModelDeployment(name="small", model="m", weight=1),
        ModelDeployment(name="off", model="m", weight=0),
    ]
    slots = plan_slots(SERVERS, weighted, PlanRequest(limit=40, strategies=["single_server"]))
    assert Counter(s.generator for s in slots) == {"big": 30, "small": 10}


def test_multi_server_allocations_pick_servers_as_named() -> None:
    for allocation in ("same_domain", "different_domains", "random"):
        slots = plan_slots(
            SERVERS,
            GENERATORS,
            PlanRequest(limit=20, strategies=["multi_server"], allocations=[allocation]),
        )
        for slot in slots:
            domains = [BY_ID[s].server.domain for s in slot.server_ids]
            assert len(set(slot.server_ids)) == len(slot.server_ids) >= 2
            assert slot.num_tools >= 2
            if slot.fallback:
                assert slot.allocation == "random"
            elif allocation == "same_domain":
                assert len(set(domains)) == 1
            elif allocation == "different_domains":
                assert len(set(domains)) == len(domains)


def test_same_domain_without_partners_falls_back_to_random_with_a_reason() -> None:
    servers = [view("a", "Weather"), view("b", "Finance"), view("c", None)]
    slots = plan_slots(
        servers,
        GENERATORS,
        PlanRequest(limit=5, strategies=["multi_server"], allocations=["same_domain"]),
    )
    assert {s.fallback for s in slots} == {"too_few_servers_in_domain"}


def test_featured_slots_show_featured_servers_first() -> None:
    slots = plan_slots(
        SERVERS, GENERATORS, PlanRequest(limit=4, strategies=["featured"], featured_servers=2)
    )
    assert all(set(s.server_ids) == {"s_c", "s_d"} for s in slots)
