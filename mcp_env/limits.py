"""Size caps on what a catalog or a server hands in (`limits` settings, toucan/config.py).

Pure functions over specs and raw tools. A text over its cap is cut and the cut is named by a
token the row keeps (`description_cut`, `tools_cut`); what cannot be cut without changing its
meaning (a name, a JSON schema, a whole catalog entry) raises ToolListError / returns a
reason token instead: `name_too_long`, `schema_too_large`, `entry_too_large`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from mcp_env.specs import HttpSpec, SseSpec, StdioSpec
from toucan.config import LimitsConfig
from toucan.errors import ToolListError
from toucan.ids import canonical_json

ELLIPSIS = "..."
DEFAULT_LIMITS = LimitsConfig()

SpecT = TypeVar("SpecT", StdioSpec, HttpSpec, SseSpec)


def cut_text(text: str, chars: int | None) -> str:
    """`text` if it fits in `chars`, else its start with an ellipsis, `chars` long in all."""
    if chars is None or len(text) <= chars:
        return text
    return text[: max(0, chars - len(ELLIPSIS))].rstrip() + ELLIPSIS


def json_size(value: Any) -> int:
    """Characters of `value` as canonical JSON (what it costs to store or send)."""
    return len(canonical_json(value))


def check_name(name: str, limits: LimitsConfig, what: str) -> None:
    """Raises ToolListError(name_too_long): a name is an identity, never cut."""
    if len(name) > limits.name_chars:
        raise ToolListError(
            f"{what} name of {len(name)} characters (limits.name_chars: {limits.name_chars})",
            reason="name_too_long",
        )


def check_schema_size(schema: Any, limits: LimitsConfig) -> None:
    """Raises ToolListError(schema_too_large): a schema cut short means something else."""
    size = json_size(schema)
    if size > limits.schema_bytes:
        raise ToolListError(
            f"inputSchema of {size} bytes (limits.schema_bytes: {limits.schema_bytes})",
            reason="schema_too_large",
        )


def cap_description(description: str, limits: LimitsConfig, repairs: list[tuple[str, str]]) -> str:
    """The description within `limits.description_chars`; a cut is appended to `repairs`."""
    if len(description) <= limits.description_chars:
        return description
    cap = limits.description_chars
    repairs.append(("description_cut", f"{len(description)} characters cut to {cap}"))
    return cut_text(description, cap)


def cap_spec(spec: SpecT, limits: LimitsConfig = DEFAULT_LIMITS) -> SpecT | str:
    """The spec within the caps (its cuts in `catalog_notes`), or the reason token of a
    rejection (`name_too_long`)."""
    if len(spec.name) > limits.name_chars:
        return "name_too_long"
    update: dict[str, Any] = {}
    notes = list(spec.catalog_notes)
    if len(spec.description) > limits.description_chars:
        update["description"] = cut_text(spec.description, limits.description_chars)
        notes.append("description_cut")
    if len(spec.tools) > limits.tools_per_server:
        update["tools"] = spec.tools[: limits.tools_per_server]
        notes.append("tools_cut")
    if not update:
        return spec
    return spec.model_copy(update={**update, "catalog_notes": notes})
