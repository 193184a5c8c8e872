"""Provenance in an export: which model actually wrote each part of a row, and the card's
account of it.

Every row's metadata names, per role, the configured deployment and the model that served it
(the name its server gave in its replies, recorded on the store rows as `served_by`); the card
counts them and says plainly when the embedded local model (profile `local`) made the data,
whatever the deployments are called in the config.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from toucan.llm.replies import any_embedded
from toucan.records import Task, TaskRating, Trajectory, TrajectoryRating

UNKNOWN_MODEL = "unknown (not recorded)"


class ServedSummary(BaseModel):
    """What served an export's rows, for the dataset card."""

    # role (generator, teacher, task_judge, trajectory_judge) -> served model -> rows
    served_by: dict[str, dict[str, int]] = Field(default_factory=dict)
    embedded_models: list[str] = Field(default_factory=list)  # served names of the embedded one
    embedded_rows: int = 0  # rows any part of which the embedded local model produced


class RoleProvenance(BaseModel):
    """Who made one part of a row: the configured deployment that answered, the model that
    actually served it (None when not recorded: rows written before provenance was kept, or
    LangChain-style trajectories) and whether that was the embedded local model."""

    deployment: str
    served_by: str | None = None
    served_by_embedded: bool | None = None


def made_by(
    deployment: str, row: Task | TaskRating | Trajectory | TrajectoryRating
) -> RoleProvenance:
    return RoleProvenance(
        deployment=deployment, served_by=row.served_by, served_by_embedded=row.served_by_embedded
    )


def row_provenance(
    task: Task,
    trajectory: Trajectory,
    trajectory_rating: TrajectoryRating,
    task_rating: TaskRating | None,
) -> dict[str, RoleProvenance]:
    """Role (generator, task_judge, teacher, trajectory_judge) -> who made that part."""
    roles = {"generator": made_by(task.deployment or task.generator, task)}
    if task_rating is not None:
        roles["task_judge"] = made_by(task_rating.judge, task_rating)
    roles["teacher"] = made_by(trajectory.deployment or trajectory.teacher, trajectory)
    roles["trajectory_judge"] = made_by(trajectory_rating.judge, trajectory_rating)
    return roles


def provenance_metadata(
    task: Task,
    trajectory: Trajectory,
    trajectory_rating: TrajectoryRating,
    task_rating: TaskRating | None,
) -> dict[str, Any]:
    """The row-metadata keys: `model` (what wrote the assistant turns, as its server named
    it), `requested_model` (the LiteLLM model string asked for), `served_by_embedded_model`
    (any part of the row made by the embedded model) and the per-role `provenance`."""
    roles = row_provenance(task, trajectory, trajectory_rating, task_rating)
    return {
        "model": trajectory.served_by,
        "requested_model": trajectory.model,
        "served_by_embedded_model": any_embedded(
            *(role.served_by_embedded for role in roles.values())
        ),
        "provenance": {role: who.model_dump() for role, who in roles.items()},
    }


def summarize_served(metadatas: Iterable[dict[str, Any]]) -> ServedSummary:
    """Count, over the rows' metadata, which models served each role and how many rows the
    embedded model had a hand in."""
    served: dict[str, Counter[str]] = {}
    embedded: dict[str, None] = {}
    summary = ServedSummary()
    for meta in metadatas:
        for role, who in (meta.get("provenance") or {}).items():
            name = who.get("served_by") or UNKNOWN_MODEL
            served.setdefault(role, Counter())[name] += 1
            if who.get("served_by_embedded"):
                embedded.setdefault(name)
        summary.embedded_rows += bool(meta.get("served_by_embedded_model"))
    summary.served_by = {role: dict(counts.most_common()) for role, counts in served.items()}
    summary.embedded_models = list(embedded)
    return summary


def served_rows(summary: ServedSummary) -> list[list[Any]]:
    """The card's table body: role, served model, rows."""
    return [
        [role, model, rows]
        for role, counts in summary.served_by.items()
        for model, rows in counts.items()
    ]


def embedded_notice(summary: ServedSummary, rows: int, deployments: list[str]) -> str:
    """The card's plain statement that the embedded local model made (part of) the data; ""
    when it made none of it."""
    if not summary.embedded_rows:
        return ""
    names = ", ".join(f"`{name}`" for name in summary.embedded_models)
    labels = ", ".join(f"`{name}`" for name in deployments) or "none"
    return (
        f"**Produced by the embedded local model {names}.** {summary.embedded_rows} of {rows} "
        "rows were written, wholly or in part, by the small model that toucan's `local` "
        f"profile runs on CPU. It answered for every configured deployment ({labels}): those "
        "names are configuration labels, not the models that wrote this data. Each such row's "
        "metadata has `served_by_embedded_model: true`."
    )
