"""Extension 2, diversify: rewrite kept tasks (a) for another persona, domain and context with
the same tools in the same order, (b) with added realistic constraints.

One generator call per (task, mode) asks for `variants` variations; each valid one becomes a
Task row (kind `diversified`, parent_id = the original) that then goes through task judging and
trajectories like any task. A call that fails leaves one error row (reason + raw reply).
"""

from __future__ import annotations

import logging
import random
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tasks.llm_batch import BatchOutput, ItemEvent, LlmLane, run_llm_batch
from tasks.prompt_budget import capped_response_format, cut_text, with_item_count
from toucan.config import PromptBudget
from toucan.errors import ConfigError, LlmError, error_row_fields
from toucan.events import joined_servers
from toucan.ids import content_hash, make_id
from toucan.llm.parsing import ModelReply, response_format_for
from toucan.llm.replies import CallMeta, LlmReply
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.prompts import RenderedPrompt, render
from toucan.records import Task

logger = logging.getLogger(__name__)
STAGE = "diversify"
MODES = ("persona", "constraints")
MIN_QUESTION_CHARS = 10
PERSONAS_FILE = Path(__file__).resolve().parents[1] / "toucan" / "personas.yaml"

Mode = Literal["persona", "constraints"]


class Persona(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    domain: str
    context: str


class Variation(ModelReply):
    persona: str = ""
    context: str = ""
    constraints: str = ""
    question: str


class VariationsReply(ModelReply):
    variations: list[Variation] = Field(default_factory=list)


REPLY_FORMAT = response_format_for(VariationsReply)


class DiversifyUnit(BaseModel):
    """One generator call: a kept task, a mode, how many variants, the personas to use."""

    task: Task
    mode: Mode
    variants: int
    personas: list[Persona] = Field(default_factory=list)
    tool_descriptions: dict[str, str] = Field(default_factory=dict)  # "server/tool" -> text


@cache
def load_personas(path: str | None = None) -> tuple[Persona, ...]:
    """The persona list (the shipped one unless `extensions.personas_file` names another)."""
    source = Path(path) if path else PERSONAS_FILE
    try:
        entries = yaml.safe_load(source.read_text(encoding="utf-8"))["personas"]
        personas = tuple(Persona.model_validate(entry) for entry in entries)
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read personas from {source}: {exc}") from exc
    if not personas:
        raise ConfigError(f"no personas in {source}")
    return personas


def variant_id(parent_id: str, mode: str, index: int) -> str:
    return make_id("task", "diversified", parent_id, mode, index)


def choose_personas(
    task_id: str, personas: tuple[Persona, ...], count: int, seed: int
) -> list[Persona]:
    """`count` distinct personas per task, a seeded draw (repeats only past the list's size)."""
    rng = random.Random(int(content_hash([seed, task_id, "personas"], 12), 16))
    chosen = rng.sample(personas, k=min(count, len(personas)))
    return chosen + [rng.choice(personas) for _ in range(count - len(chosen))]


def plan_unit(
    kept: Task,
    mode: str,
    variants: int,
    personas: tuple[Persona, ...],
    seed: int,
    tool_descriptions: dict[str, str],
) -> DiversifyUnit:
    """The unit of a (kept task, mode) pair, with its personas drawn for the persona mode
    (drawn from the task id and seed alone: a unit does not depend on the others)."""
    return DiversifyUnit(
        task=kept,
        mode=mode,
        variants=variants,
        personas=choose_personas(kept.task_id, personas, variants, seed)
        if mode == "persona"
        else [],
        tool_descriptions={
            f"{t.server}/{t.tool}": tool_descriptions.get(f"{t.server_id}/{t.tool}", "")
            for t in kept.target_tools
        },
    )


def render_diversify_prompt(
    unit: DiversifyUnit, description_chars: int | None = None
) -> RenderedPrompt:
    tools = [
        {
            "server": t.server,
            "tool": t.tool,
            "description": cut_text(
                unit.tool_descriptions.get(f"{t.server}/{t.tool}", ""), description_chars
            ),
        }
        for t in unit.task.target_tools
    ]
    return render(
        f"{STAGE}/{unit.mode}",
        question=unit.task.question,
        tools=tools,
        personas=[p.model_dump() for p in unit.personas],
        variations_count=unit.variants,
    )


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def variant_rows(
    unit: DiversifyUnit, parsed: VariationsReply, reply: LlmReply, prompt: RenderedPrompt
) -> list[Task]:
    """Valid variations as Task rows; none valid -> one rejected row with the reason."""
    parent = unit.task
    seen = {normalise(parent.question)}
    rows: list[Task] = []
    reasons: list[str] = []
    for variation in parsed.variations[: unit.variants]:
        question = variation.question.strip()
        if len(question) < MIN_QUESTION_CHARS:
            reasons.append("question_too_short")
            continue
        if normalise(question) in seen:
            reasons.append("unchanged_question")
            continue
        seen.add(normalise(question))
        persona = unit.personas[len(rows)] if unit.mode == "persona" else None
        rows.append(
            base_variant(unit, len(rows), prompt).model_copy(
                update={
                    "question": question,
                    "deployment": reply.deployment,
                    **reply.row_fields(),
                    "metadata": {
                        **variant_metadata(unit, prompt, reply),
                        "variant_index": len(rows),
                        "persona": variation.persona or (persona.name if persona else ""),
                        "persona_domain": persona.domain if persona else None,
                        "context": variation.context,
                        "constraints": variation.constraints,
                    },
                }
            )
        )
    if rows:
        return rows
    reason = reasons[0] if reasons else "no_variations"
    return [
        base_variant(unit, 0, prompt).model_copy(
            update={
                "status": "rejected",
                "reason": reason,
                "raw_reply": reply.text,
                "deployment": reply.deployment,
                **reply.row_fields(),
                "metadata": variant_metadata(unit, prompt, reply),
            }
        )
    ]


def base_variant(unit: DiversifyUnit, index: int, prompt: RenderedPrompt) -> Task:
    parent = unit.task
    return Task(
        task_id=variant_id(parent.task_id, unit.mode, index),
        kind="diversified",
        parent_id=parent.task_id,
        strategy=parent.strategy,
        question=parent.question,
        target_tools=parent.target_tools,  # same tools, same call order
        server_ids=parent.server_ids,
        generator=parent.generator,
        prompt_hash=prompt.template_hash,
        seed=parent.seed,
    )


def variant_metadata(
    unit: DiversifyUnit, prompt: RenderedPrompt, reply: LlmReply
) -> dict[str, Any]:
    return {
        "mode": unit.mode,
        "template": prompt.name,
        "rendered_prompt_hash": prompt.prompt_hash,
        "model": reply.model,
    }


def error_row(unit: DiversifyUnit, prompt: RenderedPrompt, error: Exception) -> Task:
    return base_variant(unit, 0, prompt).model_copy(
        update={
            **error_row_fields(error),
            "metadata": {"mode": unit.mode, "error": str(error)[:1000]},
        }
    )


async def diversify_task(
    unit: DiversifyUnit, router: LlmRouter, run_id: str, budget: PromptBudget | None = None
) -> list[Task]:
    """One (task, mode) -> its variant rows (or one rejected/error row). `budget` cuts the
    tool descriptions shown and caps the length of each variation's text."""
    budget = budget or PromptBudget()
    prompt = render_diversify_prompt(unit, budget.description_chars)
    meta = CallMeta(
        run_id=run_id,
        stage=STAGE,
        item_id=variant_id(unit.task.task_id, unit.mode, 0),
        server_id=unit.task.server_ids[0] if unit.task.server_ids else None,
    )
    try:
        parsed, reply = await complete_structured(
            router,
            "generator",
            prompt.messages,
            VariationsReply,
            meta=meta,
            response_format=capped_response_format(
                with_item_count(REPLY_FORMAT, "variations", unit.variants, unit.variants), budget
            ),
        )
    except Exception as error:  # the stage edge: a broken item must not stop the batch
        if not isinstance(error, LlmError):
            logger.exception("diversifying %s failed", unit.task.task_id)
        return [error_row(unit, prompt, error)]
    return variant_rows(unit, parsed, reply, prompt)


def variant_event(rows: list[Task]) -> ItemEvent:
    """A (task, mode) unit's event, told by its first row and labelled by its mode."""
    first = rows[0]
    return ItemEvent(
        item_id=first.task_id,
        status=first.status,
        label=str(first.metadata.get("mode", "")),
        error_class=first.reason,
        server=joined_servers(first.server_ids),
        model=first.deployment or "generator",
        served_by=first.served_by,
    )


async def diversify_batch(units: list[DiversifyUnit], lane: LlmLane) -> BatchOutput:
    """A batch of (task, mode) units, at most `lane.concurrency` generator calls in flight."""

    async def work(unit: DiversifyUnit, router: LlmRouter) -> list[Task]:
        rows = await diversify_task(unit, router, lane.run_id, lane.models.prompt_budget)
        return [row.model_copy(update={"run_id": lane.run_id}) for row in rows]

    return await run_llm_batch(units, lane, STAGE, work, variant_event)
