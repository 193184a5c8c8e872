"""Our records for what an MCP server returned: listed tools and tool-call results.

Third-party SDK objects stop here; everything above `mcp_env` sees these pydantic records.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from toucan.ids import canonical_json, schema_hash

# how many characters of a non-text block (image data, blob) a marker may quote
MARKER_PREVIEW_CHARS = 80


class ListedTool(BaseModel):
    """A tool as a live server lists it."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    annotations: dict[str, Any] = Field(default_factory=dict)
    schema_hash: str = ""


class ToolResult(BaseModel):
    """One tool call's outcome. A tool that failed is a result with is_error, not an exception."""

    text: str
    is_error: bool = False
    content_types: list[str] = Field(default_factory=list)
    truncated: bool = False
    original_chars: int = 0
    latency_ms: float = 0.0
    error_reason: str | None = None  # snake_case token when is_error, e.g. "tool_error"


def make_listed_tool(
    name: str,
    description: str | None,
    input_schema: dict[str, Any] | None,
    annotations: dict[str, Any] | None,
) -> ListedTool:
    schema = input_schema if isinstance(input_schema, dict) else {"type": "object"}
    return ListedTool(
        name=name,
        description=description or "",
        input_schema=schema,
        annotations=annotations or {},
        schema_hash=schema_hash(schema),
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
    content: list[Any], structured: Any, is_error: bool, latency_ms: float
) -> ToolResult:
    """Flatten an SDK CallToolResult's parts into our record (blocks joined by newlines)."""
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
    )


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
