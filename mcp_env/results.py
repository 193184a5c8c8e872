"""Our records for what an MCP server returned: listed tools and tool-call results.

Third-party SDK objects stop here; everything above `mcp_env` sees these pydantic records.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from mcp_env.tool_schemas import check_instance
from toucan.ids import canonical_json
from toucan.records import ToolRejection, protocol_annotations

# how many characters of a non-text block (image data, blob) a marker may quote
MARKER_PREVIEW_CHARS = 80


class ListedTool(BaseModel):
    """A usable tool as a server lists it, after repair (see mcp_env/listing.py).

    `annotations` keep their MCP protocol names (`readOnlyHint`, ...); `output_schema` is None
    when the tool declared none or declared one that was dropped (`repairs` says so)."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] = Field(default_factory=dict)
    schema_hash: str = ""
    repairs: list[str] = Field(default_factory=list)  # tokens, e.g. missing_root_type
    repair_detail: str = ""

    _protocol_annotations = field_validator("annotations", mode="before")(protocol_annotations)


class ToolListing(BaseModel):
    """A server's whole `tools/list`: the usable tools (each name once), the tools left out
    with their reasons, and notes on the listing itself (tokens: stuck_cursor,
    duplicate_tool_names, invalid_cursor, page_limit)."""

    tools: list[ListedTool] = Field(default_factory=list)
    rejected: list[ToolRejection] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def output_schemas(self) -> dict[str, dict[str, Any] | None]:
        return {tool.name: tool.output_schema for tool in self.tools}


class ToolResult(BaseModel):
    """One tool call's outcome. A tool that failed is a result with is_error, not an exception."""

    text: str
    is_error: bool = False
    content_types: list[str] = Field(default_factory=list)
    truncated: bool = False
    original_chars: int = 0
    latency_ms: float = 0.0
    error_reason: str | None = None  # snake_case token when is_error, e.g. "tool_error"
    # a result kept although something about it is off, e.g. "output_schema_mismatch"
    note: str | None = None

    @classmethod
    def failure(cls, text: str, reason: str, latency_ms: float = 0.0) -> ToolResult:
        """A failed call as the model will see it: `text`, with the reason token."""
        return cls(
            text=text,
            is_error=True,
            content_types=["text"],
            original_chars=len(text),
            latency_ms=latency_ms,
            error_reason=reason,
        )


def describe_block(block: Any) -> tuple[str, str]:
    """(content type, text) for one content block; non-text blocks become short markers."""
    block_type = getattr(block, "type", type(block).__name__)
    if block_type == "text":
        return "text", block.text
    if block_type in ("image", "audio"):
        size = len(getattr(block, "data", "") or "")
        return block_type, f"[{block_type}: {block.mime_type}, {size} base64 chars]"
    if block_type == "resource":
        resource = block.resource
        body = getattr(resource, "text", None)
        if body is None:
            blob = getattr(resource, "blob", "") or ""
            return "resource", f"[resource {resource.uri}: {len(blob)} base64 chars]"
        return "resource", f"[resource {resource.uri}]\n{body}"
    if block_type == "resource_link":
        return "resource_link", f"[resource link {block.uri}: {getattr(block, 'name', '')}]"
    preview = str(block)[:MARKER_PREVIEW_CHARS]
    return str(block_type), f"[{block_type}: {preview}]"


def make_tool_result(
    content: list[Any],
    structured: Any,
    is_error: bool,
    latency_ms: float,
    output_schema: dict[str, Any] | None = None,
) -> ToolResult:
    """Flatten an SDK CallToolResult's parts into our record (blocks joined by newlines).
    A successful result is checked against the tool's `outputSchema`, if any: one that
    misses it is kept, text and all, with a `note` (see `check_structured_content`)."""
    types_and_texts = [describe_block(block) for block in content]
    texts = [text for _, text in types_and_texts]
    if not texts and structured is not None:
        texts = [canonical_json(structured)]
    text = "\n".join(texts)
    return ToolResult(
        text=text,
        is_error=is_error,
        content_types=sorted({content_type for content_type, _ in types_and_texts}),
        original_chars=len(text),
        latency_ms=latency_ms,
        error_reason="tool_error" if is_error else None,
        note=None if is_error else check_structured_content(output_schema, structured),
    )


def check_structured_content(output_schema: dict[str, Any] | None, structured: Any) -> str | None:
    """The note for a result that breaks its tool's `outputSchema` promise, or None. MCP spec
    2025-06-18 server/tools ("Output Schema"): a tool that declares one MUST return
    conforming `structuredContent`; the SDK raises where this returns
    `structured_content_missing` or `output_schema_mismatch`."""
    if output_schema is None:
        return None
    if structured is None:
        return "structured_content_missing"
    checked, violation = check_instance(output_schema, structured)
    return "output_schema_mismatch" if checked and violation is not None else None


def truncate_result(result: ToolResult, max_chars: int) -> ToolResult:
    """Cap the text at max_chars with a visible marker; the original length is kept."""
    if len(result.text) <= max_chars:
        return result
    marker = f"\n...[truncated: {len(result.text)} chars, showing first {max_chars}]"
    return result.model_copy(
        update={
            "text": result.text[:max_chars] + marker,
            "truncated": True,
            "original_chars": len(result.text),
        }
    )
