"""Stage 2, one task: render the strategy's prompt, ask the slot's generator, check the reply.

Pure parts (prompt inputs, reply schema, target checks) are plain functions; `synthesize_task`
is the async unit of work (no Prefect, no DuckDB); `synthesize_batch` runs a batch of slots
concurrently and returns rows and events for the runner to write.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tasks.llm_batch import BatchOutput, ItemEvent, LlmLane, run_llm_batch
from tasks.prompt_budget import budget_view, capped_response_format, shown_tools
from tasks.sampling import ServerView, TaskSlot
from toucan.config import PromptBudget
from toucan.errors import LlmError, error_row_fields
from toucan.events import joined_servers
from toucan.llm.parsing import ModelReply
from toucan.llm.replies import CallMeta, LlmReply
from toucan.llm.router import LlmRouter
from toucan.llm.structured import complete_structured
from toucan.prompts import RenderedPrompt, render
from toucan.records import TargetTool, Task

logger = logging.getLogger(__name__)

STAGE = "synthesize"
MIN_QUESTION_CHARS = 10
# Refusals open the reply; polite requests ("Could you please...") are legitimate questions.
REFUSAL_OPENINGS = (
    "i cannot",
    "i can't",
    "i can not",
    "i'm unable",
    "i am unable",
    "i apologize",
    "i'm sorry",
    "i am sorry",
    "as an ai",
)
LINE_BREAKERS = {"\u2028": " ", "\u2029": " ", "\x85": " ", "\x0b": " ", "\x0c": " "}
SERVER_SUFFIXES = (" mcp server", " server", " mcp")
MULTI_SERVER_STRATEGIES = ("multi_server", "featured")


class ToolChoice(ModelReply):
    server: str
    tool: str


class SynthesisReply(ModelReply):
    """What a generator returns; analysis fields come before the question on purpose."""

    server_analysis: str = ""
    cross_server_workflow: str = ""
    target_tools: list[ToolChoice]
    question: str


SYNTHESIS_SCHEMA = SynthesisReply.model_json_schema()


def server_payload(view: ServerView) -> dict[str, Any]:
    """What a template sees of a server: names and descriptions, no schemas."""
    return {
        "name": view.name,
        "description": view.server.description,
        "domain": view.server.domain,
        "tools": [{"name": t.name, "description": t.description} for t in view.tools],
    }


def render_synthesis_prompt(slot: TaskSlot, views: Sequence[ServerView]) -> RenderedPrompt:
    servers = [server_payload(view) for view in views]
    return render(
        f"{STAGE}/{slot.strategy}", servers=servers, server=servers[0], num_tools=slot.num_tools
    )


def shown_views(
    slot: TaskSlot, views: Mapping[str, ServerView], budget: PromptBudget
) -> list[ServerView]:
    """The slot's servers as its prompt shows them: the budget's cut, seeded by the slot, never
    fewer tools than the slot asks for (KeyError for a server not in `views`)."""
    return [
        budget_view(views[server_id], budget, slot.task_id, at_least=slot.num_tools)
        for server_id in slot.server_ids
    ]


def reply_format_for(slot: TaskSlot, views: Sequence[ServerView]) -> dict[str, Any]:
    """The `response_format` of a slot: SynthesisReply's JSON schema narrowed to the real
    (server, tool) pairs and the exact tool count, for constrained decoders. Parsing stays
    with the lenient SynthesisReply, so a wrong name becomes `target_tool_not_found`.
    Built as a plain dict: a pydantic model per slot would cost milliseconds each."""
    pairs = [
        {
            "type": "object",
            "properties": {
                "server": {"const": view.name, "type": "string"},
                "tool": {"enum": [tool.name for tool in view.tools], "type": "string"},
            },
            "required": ["server", "tool"],
        }
        for view in views
        if view.tools
    ]
    schema = copy.deepcopy(SYNTHESIS_SCHEMA)
    schema["$defs"]["ToolChoice"] = {"anyOf": pairs}
    schema["properties"]["target_tools"].update(minItems=slot.num_tools, maxItems=slot.num_tools)
    return {
        "type": "json_schema",
        "json_schema": {"name": "SynthesisReply", "schema": schema, "strict": False},
    }


def clean_question(question: str) -> str:
    for char, replacement in LINE_BREAKERS.items():
        question = question.replace(char, replacement)
    return question.strip()


def canonical_server_name(name: str) -> str:
    lowered = name.strip().lower()
    for suffix in SERVER_SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return lowered[: -len(suffix)].strip()
    return lowered


def resolve_targets(
    choices: Sequence[ToolChoice], views: Sequence[ServerView]
) -> tuple[list[TargetTool], list[str]]:
    """(found targets without repeats, in order; "server/tool" names that do not exist)."""
    by_name = {canonical_server_name(v.name): v for v in views}
    found: list[TargetTool] = []
    missing: list[str] = []
    for choice in choices:
        view = by_name.get(canonical_server_name(choice.server))
        tool_names = {t.name: t.name for t in view.tools} if view else {}
        tool_names.update(
            {k.lower(): v for k, v in tool_names.items() if k.lower() not in tool_names}
        )
        tool = tool_names.get(choice.tool.strip()) or tool_names.get(choice.tool.strip().lower())
        if view is None or tool is None:
            missing.append(f"{choice.server}/{choice.tool}")
            continue
        target = TargetTool(server_id=view.server_id, server=view.name, tool=tool)
        if target not in found:
            found.append(target)
    return found, missing


def judge_reply(
    reply: SynthesisReply, slot: TaskSlot, views: Sequence[ServerView]
) -> tuple[list[TargetTool], str | None, dict[str, Any]]:
    """(targets, rejection reason or None, details for metadata)."""
    targets, missing = resolve_targets(reply.target_tools, views)
    question = clean_question(reply.question)
    if missing:
        return targets, "target_tool_not_found", {"missing_tools": missing}
    if len(question) < MIN_QUESTION_CHARS:
        return targets, "question_too_short", {}
    if question.lower().startswith(REFUSAL_OPENINGS):
        return targets, "refusal", {}
    if len(targets) != slot.num_tools:
        return targets, "wrong_tool_count", {"got_tools": len(targets)}
    if slot.strategy in MULTI_SERVER_STRATEGIES and len({t.server_id for t in targets}) < 2:
        return targets, "single_server_only", {}
    return targets, None, {}


def sampling_seed(slot: TaskSlot) -> int:
    """The provider-side sampling seed of a slot. It also keeps two slots with the same prompt
    (same server, tool count and generator) from sharing one cached reply."""
    return int(slot.task_id.split("_", 1)[1][:8], 16)


def base_task(slot: TaskSlot, prompt: RenderedPrompt) -> Task:
    return Task(
        task_id=slot.task_id,
        strategy=slot.strategy,
        server_ids=list(slot.server_ids),
        generator=slot.generator,
        prompt_hash=prompt.template_hash,
        seed=slot.seed,
        metadata={
            "slot": slot.slot,
            "allocation": slot.allocation,
            "allocation_fallback": slot.fallback,
            "num_tools": slot.num_tools,
            "shown_server_ids": list(slot.server_ids),
            "rendered_prompt_hash": prompt.prompt_hash,
            "template": prompt.name,
        },
    )


def task_from_reply(
    slot: TaskSlot,
    views: Sequence[ServerView],
    prompt: RenderedPrompt,
    parsed: SynthesisReply,
    reply: LlmReply,
) -> Task:
    targets, reason, details = judge_reply(parsed, slot, views)
    task = base_task(slot, prompt)
    server_ids = list(slot.server_ids)
    if slot.strategy == "featured" and targets:  # cut back to the servers the task uses
        server_ids = list(dict.fromkeys(t.server_id for t in targets))
    return task.model_copy(
        update={
            "question": clean_question(parsed.question),
            "target_tools": targets,
            "server_ids": server_ids,
            "status": "rejected" if reason else "ok",
            "reason": reason,
            "raw_reply": reply.text if reason else None,
            "deployment": reply.deployment,
            **reply.row_fields(),
            "metadata": {
                **task.metadata,
                **details,
                "server_analysis": parsed.server_analysis,
                "cross_server_workflow": parsed.cross_server_workflow,
                "model": reply.model,
            },
        }
    )


def error_task(slot: TaskSlot, prompt: RenderedPrompt, error: Exception) -> Task:
    task = base_task(slot, prompt)
    metadata = {**task.metadata, "error": str(error)[:1000]}
    return task.model_copy(update={**error_row_fields(error), "metadata": metadata})


async def synthesize_task(
    slot: TaskSlot,
    views: Mapping[str, ServerView],
    router: LlmRouter,
    run_id: str,
    budget: PromptBudget | None = None,
) -> Task:
    """One slot -> one Task row: ok, rejected (with reason) or error (with reason, raw reply).
    `budget` cuts the tools shown per server (seeded by the slot) and caps the reply's text."""
    budget = budget or PromptBudget()
    shown = shown_views(slot, views, budget)
    prompt = render_synthesis_prompt(slot, shown)
    meta = CallMeta(run_id=run_id, stage=STAGE, server_id=slot.server_ids[0], item_id=slot.task_id)
    try:
        parsed, reply = await complete_structured(
            router,
            slot.generator,
            prompt.messages,
            SynthesisReply,
            params={"seed": sampling_seed(slot)},
            meta=meta,
            response_format=capped_response_format(reply_format_for(slot, shown), budget),
        )
    except LlmError as error:
        return error_task(slot, prompt, error)
    except Exception as error:  # the stage edge: one broken item must not stop the batch
        logger.exception("synthesizing %s failed", slot.task_id)
        return error_task(slot, prompt, error)
    task_row = task_from_reply(slot, shown, prompt, parsed, reply)
    if cut := shown_tools(shown, views):
        task_row.metadata.update(cut)
    return task_row


def task_event(task: Task) -> ItemEvent:
    """A synthesized task's event (tokens and cost from its reply), labelled by its strategy."""
    return ItemEvent(
        item_id=task.task_id,
        status=task.status,
        label=task.strategy,
        error_class=task.reason,
        server=joined_servers(task.server_ids),
        model=task.deployment or task.generator,
        served_by=task.served_by,
        error=task.metadata.get("error"),
        tokens_in=task.usage.prompt_tokens,
        tokens_out=task.usage.completion_tokens,
        cost_usd=task.cost_usd,
    )


async def synthesize_batch(
    slots: list[TaskSlot], lane: LlmLane, views: dict[str, ServerView]
) -> BatchOutput:
    """A batch of slots, at most `lane.concurrency` in flight; every slot yields exactly one Task."""

    async def work(slot: TaskSlot, router: LlmRouter) -> list[Task]:
        task_row = await synthesize_task(
            slot, views, router, lane.run_id, lane.models.prompt_budget
        )
        return [task_row.model_copy(update={"run_id": lane.run_id})]

    return await run_llm_batch(slots, lane, STAGE, work, lambda rows: task_event(rows[0]))
