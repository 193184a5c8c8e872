"""What a stage hands the batch runner and gets back, and the stage's online/batch choice."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from toucan.config import StageMode
from toucan.errors import LlmError
from toucan.llm.parsing import response_format_for
from toucan.llm.replies import CallMeta, LlmReply, LlmRequest
from toucan.llm.structured import parse_or_repair

if TYPE_CHECKING:
    from toucan.llm.router import LlmRouter

Outcome = LlmReply | LlmError
T = TypeVar("T", bound=BaseModel)


class BatchItem(BaseModel):
    """One request a stage wants answered: what `LlmRouter.complete` would be asked."""

    item_id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    server_id: str | None = None  # for the call's event row

    def request(self) -> LlmRequest:
        return LlmRequest(self.messages, self.tools, self.response_format, self.params)


async def parse_outcome(
    router: LlmRouter,
    item: BatchItem,
    outcome: Outcome,
    schema: type[T],
    *,
    meta: CallMeta | None = None,
) -> tuple[T, LlmReply]:
    """A batch outcome through the online structured path (`parse_or_repair`: lenient parse,
    one online repair, cached once parsed, under the item's own request). Raises the item's
    LlmError, or UnparseableReply."""
    if isinstance(outcome, LlmError):
        raise outcome
    response_format = item.response_format or response_format_for(schema)
    return await parse_or_repair(
        router,
        item.messages,
        outcome,
        schema,
        response_format=response_format,
        params=item.params,
        meta=meta,
    )


def use_batch(mode: StageMode, batchable_items: int, min_items: int) -> bool:
    """Whether a stage sends its batchable items as batch jobs: always in `batch` mode, in
    `auto` mode when there are more than `min_items` of them, never in `online` mode."""
    if mode == "auto":
        return batchable_items > min_items
    return mode == "batch" and batchable_items > 0
