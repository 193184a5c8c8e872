"""Extension 1, irrelevance: a kept task paired with a server that cannot solve it.

The right behaviour on such a task is to say the tools cannot do it and to call no tool. Pairs
come from a seeded shuffle per task; a server is a candidate only when none of its domains
(primary or secondary) meets the domains of the task's own servers, and a server without a
domain label is never a candidate (we cannot show it is unrelated). No model is needed.

Trajectory filtering applies its own rule to these rows (`tool_called_on_irrelevant` in
tasks/trajectory_rules.py): any tool call is the failure.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from toucan.ids import content_hash, make_id
from toucan.records import Server, Task

STAGE = "irrelevance"


def server_domains(server: Server) -> set[str]:
    return {d for d in (server.domain, *server.secondary_domains) if d}


def task_domains(task: Task, servers: dict[str, Server]) -> set[str]:
    """Domains of the servers the task was written for."""
    domains: set[str] = set()
    for server_id in task.server_ids:
        if server_id in servers:
            domains |= server_domains(servers[server_id])
    return domains


def unrelated_servers(task: Task, servers: dict[str, Server]) -> list[Server]:
    """Usable servers sharing no domain with the task's servers, in a stable order."""
    domains = task_domains(task, servers)
    return [
        s
        for s in sorted(servers.values(), key=lambda s: s.server_id)
        if s.status == "ok"
        and s.tool_count > 0
        and s.server_id not in task.server_ids
        and server_domains(s)
        and not (server_domains(s) & domains)
    ]


def irrelevant_task_id(parent_id: str, index: int) -> str:
    return make_id("task", "irrelevant", parent_id, index)


def pair_task(task: Task, servers: dict[str, Server], per_task: int, seed: int) -> list[Task]:
    """`per_task` irrelevant variants of one kept task, or one rejected row saying why not."""
    candidates = unrelated_servers(task, servers)
    if not task_domains(task, servers):
        return [rejected_pair(task, "task_domain_unknown", seed)]
    if not candidates:
        return [rejected_pair(task, "no_unrelated_server", seed)]
    rng = random.Random(int(content_hash([seed, task.task_id], 12), 16))
    chosen = rng.sample(candidates, k=min(per_task, len(candidates)))
    return [
        Task(
            task_id=irrelevant_task_id(task.task_id, index),
            kind="irrelevant",
            parent_id=task.task_id,
            strategy=task.strategy,
            question=task.question,
            target_tools=task.target_tools,  # what the question needs; not what is offered
            server_ids=[server.server_id],
            generator=task.generator,
            # the question is the original's, so is who wrote it
            served_by=task.served_by,
            served_by_embedded=task.served_by_embedded,
            prompt_hash=task.prompt_hash,
            seed=seed,
            metadata={
                "irrelevant_server": server.name,
                "irrelevant_server_domains": sorted(server_domains(server)),
                "target_domains": sorted(task_domains(task, servers)),
                "candidates": len(candidates),
            },
        )
        for index, server in enumerate(chosen)
    ]


def rejected_pair(task: Task, reason: str, seed: int) -> Task:
    return Task(
        task_id=irrelevant_task_id(task.task_id, 0),
        kind="irrelevant",
        parent_id=task.task_id,
        strategy=task.strategy,
        question=task.question,
        target_tools=task.target_tools,
        generator=task.generator,
        seed=seed,
        status="rejected",
        reason=reason,
    )


def pair_tasks(
    tasks: Sequence[Task], servers: dict[str, Server], per_task: int, seed: int
) -> list[Task]:
    return [row for kept in tasks for row in pair_task(kept, servers, per_task, seed)]


def pair_tasks_batch(
    tasks: list[Task], servers: dict[str, Server], per_task: int, seed: int, run_id: str
) -> list[Task]:
    """A batch of kept tasks -> their irrelevant rows; returns rows, never writes the store."""
    return [
        row.model_copy(update={"run_id": run_id})
        for row in pair_tasks(tasks, servers, per_task, seed)
    ]
