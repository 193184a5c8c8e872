"""Catalog readers: our YAML/JSON spec files and the Smithery registry dump, into ServerSpecs.

`load_catalog(path)` never raises for bad content: every entry becomes either a spec or one
`CatalogRejection` with a reason token, so a run can account for every input line. Sizes are
held to the `limits` settings (mcp_env/limits.py): a file or an entry too large is rejected
(`file_too_large`, `entry_too_large`), so is a name too long (`name_too_long`); a long
description or too many declared tools are cut, and the spec's `catalog_notes` say so.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from mcp_env.limits import DEFAULT_LIMITS, cap_spec, json_size
from mcp_env.specs import ConfigField, HttpSpec, SseSpec, StdioSpec, parse_server_spec
from toucan.config import LimitsConfig

AnySpec = StdioSpec | HttpSpec | SseSpec

CATEGORIES = (
    "Web Search & Research", "Browser Automation", "Memory Management", "Operating System",
    "Data Analysis & Processing", "Cryptocurrency & Blockchain", "Daily Productivity",
    "File Management", "Database Operations", "API Integration", "Communication Tools",
    "Development Tools", "Security & Authentication", "Cloud Services", "AI/ML Tools",
    "Content Creation", "Social Media", "Financial Services", "E-commerce", "Gaming",
    "Education", "Health & Fitness", "Travel & Maps", "News & Media", "Weather",
    "Time & Calendar",
)  # fmt: skip
SMITHERY_KEY_FIELD = ConfigField(
    name="smithery_api_key",
    required=False,  # needed for a live connection, not for --specs-only
    secret=True,
    env="SMITHERY_API_KEY",
    description="Smithery gateway key; every live connection to a Smithery server needs it",
)
SMITHERY_PROFILE_FIELD = ConfigField(
    name="smithery_profile", required=False, env="SMITHERY_PROFILE", description="Smithery profile"
)
SECRET_NAME = re.compile(r"key|token|secret|password|credential|auth", re.IGNORECASE)
NOT_GIVEN = {"", "not available", "not specified", "none", "n/a"}


class CatalogRejection(BaseModel):
    """A catalog entry (or whole file) that did not become a spec, and why."""

    source: str
    index: int | None = None  # 1-based line (jsonl) or 0-based list position (yaml/json)
    name: str | None = None
    reason: str  # invalid_json | invalid_yaml | missing_command | missing_url | invalid_spec | ...
    detail: str = ""


class CatalogLoad(BaseModel):
    specs: list[Any] = Field(default_factory=list)  # StdioSpec | HttpSpec | SseSpec
    rejections: list[CatalogRejection] = Field(default_factory=list)


def load_catalog(path: Path, limits: LimitsConfig = DEFAULT_LIMITS) -> CatalogLoad:
    """Read one catalog file (.yaml/.yml, .json, .jsonl; Smithery lines are recognised)."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > limits.catalog_file_bytes:
            detail = f"{size} bytes (limits.catalog_file_bytes: {limits.catalog_file_bytes})"
            return _rejected_file(source, "file_too_large", detail)
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return _rejected_file(source, "unreadable_file", str(error))
    if Path(path).suffix.lower() == ".jsonl" or _looks_like_jsonl(text):
        return _load_jsonl(text, source, limits)
    return _load_document(text, source, limits, is_json=Path(path).suffix.lower() == ".json")


def parse_catalog_entries(
    entries: list[Any],
    *,
    source: str,
    first_index: int = 0,
    limits: LimitsConfig = DEFAULT_LIMITS,
) -> tuple[list[AnySpec], list[CatalogRejection]]:
    """Validate entries (our spec dicts or Smithery records); duplicates by server id rejected."""
    specs: list[AnySpec] = []
    rejections: list[CatalogRejection] = []
    seen: dict[str, int] = {}
    for offset, entry in enumerate(entries):
        index = first_index + offset
        spec_or_rejection = parse_entry(entry, source=source, index=index, limits=limits)
        if isinstance(spec_or_rejection, CatalogRejection):
            rejections.append(spec_or_rejection)
        elif spec_or_rejection.server_id in seen:
            rejections.append(
                CatalogRejection(
                    source=source,
                    index=index,
                    name=spec_or_rejection.name,
                    reason="duplicate_name",
                    detail=f"same source and name as entry {seen[spec_or_rejection.server_id]}",
                )
            )
        else:
            seen[spec_or_rejection.server_id] = index
            specs.append(spec_or_rejection)
    return specs, rejections


def parse_entry(
    entry: Any, *, source: str, index: int, limits: LimitsConfig = DEFAULT_LIMITS
) -> AnySpec | CatalogRejection:
    """One entry to a spec within `limits`, or to a rejection naming what is wrong with it."""
    spec = _parse_entry(entry, source=source, index=index, limits=limits)
    if isinstance(spec, CatalogRejection):
        return spec
    capped = cap_spec(spec, limits)
    if isinstance(capped, str):
        detail = f"name of {len(spec.name)} characters (limits.name_chars: {limits.name_chars})"
        shown = spec.name[: limits.name_chars]
        return CatalogRejection(
            source=source, index=index, name=shown, reason=capped, detail=detail
        )
    return capped


def _parse_entry(
    entry: Any, *, source: str, index: int, limits: LimitsConfig = DEFAULT_LIMITS
) -> AnySpec | CatalogRejection:
    name = entry.get("name") if isinstance(entry, dict) else None
    name = name if isinstance(name, str) else None

    def reject(reason: str, detail: str) -> CatalogRejection:
        shown = name[: limits.name_chars] if name else None
        return CatalogRejection(
            source=source, index=index, name=shown, reason=reason, detail=detail
        )

    if isinstance(entry, dict) and (size := json_size(entry)) > limits.catalog_entry_bytes:
        cap = limits.catalog_entry_bytes
        return reject("entry_too_large", f"{size} bytes (limits.catalog_entry_bytes: {cap})")
    if not isinstance(entry, dict):
        return reject("invalid_spec", f"entry is a {type(entry).__name__}, not a mapping")
    if is_smithery_record(entry):
        name = _smithery_name(entry)
        if not _smithery_url(entry):
            return reject("missing_url", "no url in remote_server_response or python_sdk_url")
        try:
            return smithery_to_spec(entry)
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            return reject("invalid_smithery_entry", f"{type(error).__name__}: {error}")
    raw = dict(entry)
    transport = raw.get("transport") or ("stdio" if "url" not in raw else "streamable-http")
    if transport == "stdio" and not raw.get("command"):
        return reject("missing_command", "a stdio server needs `command`")
    if transport in ("streamable-http", "sse") and not raw.get("url"):
        return reject("missing_url", f"a {transport} server needs `url`")
    try:
        return parse_server_spec(raw)
    except ValidationError as error:
        return reject("invalid_spec", _short_validation_error(error))


def is_smithery_record(entry: dict[str, Any]) -> bool:
    metadata = entry.get("metadata")
    return isinstance(metadata, dict) and "server_info_crawled" in metadata


def smithery_to_spec(record: dict[str, Any]) -> HttpSpec:
    """Map one Smithery registry record (TOUCAN's crawl) to an HttpSpec."""
    metadata = record["metadata"]
    info = metadata["server_info_crawled"]
    remote = metadata.get("remote_server_response") or {}
    labels = record.get("labels") or {}
    url = _smithery_url(record)
    if not url:
        raise ValueError("no url in remote_server_response or python_sdk_url")
    primary = labels.get("primary_label")
    secondary = [label for label in labels.get("secondary_labels") or [] if label]
    if primary and primary not in CATEGORIES:
        secondary.append(primary)
    tools = remote.get("tools") or info.get("tools") or []
    return HttpSpec(
        transport_declared=False,  # the registry gives a URL, not its transport
        name=_smithery_name(record),
        title=info.get("name") or metadata.get("server_name"),
        url=url,
        source="smithery",
        description=info.get("overview") or "",
        domain=primary if primary in CATEGORIES else None,
        secondary_domains=secondary,
        config=[*_smithery_config(info), SMITHERY_KEY_FIELD, SMITHERY_PROFILE_FIELD],
        tools=[
            _smithery_tool(tool) for tool in tools if isinstance(tool, dict) and tool.get("name")
        ],
        license=_given(info.get("license")),
        homepage=_given(info.get("homepage")),
        repository=_given(info.get("repository_url")),
        usage_count=parse_usage_count(info.get("usage_count") or metadata.get("usage_count")),
        featured=bool(labels.get("featured_server")),
    )


def parse_usage_count(value: Any) -> int:
    """'73,272' -> 73272; 'Not available' and junk -> 0."""
    if isinstance(value, int):
        return value
    digits = re.sub(r"[,\s_]", "", str(value or ""))
    return int(digits) if digits.isdigit() else 0


def _smithery_url(record: dict[str, Any]) -> str:
    metadata = record["metadata"]
    remote = metadata.get("remote_server_response") or {}
    return remote.get("url") or _fill_sdk_url(metadata["server_info_crawled"])


def _smithery_name(record: dict[str, Any]) -> str:
    """The registry key (unique, e.g. '@upstash/context7-mcp'); display names repeat."""
    info = record["metadata"]["server_info_crawled"]
    homepage = info.get("homepage") or ""
    match = re.match(r"https?://smithery\.ai/server/(.+)", homepage)
    return match.group(1) if match else str(info.get("name") or record["metadata"]["server_name"])


def _smithery_config(info: dict[str, Any]) -> list[ConfigField]:
    fields = []
    for requirement in info.get("smithery_configuration_requirements") or []:
        fields.append(
            ConfigField(
                name=str(requirement["name"]),
                required=bool(requirement.get("required", True)),
                secret=bool(SECRET_NAME.search(str(requirement["name"]))),
                description=str(requirement.get("description") or ""),
            )
        )
    return fields


def _smithery_tool(tool: dict[str, Any]) -> dict[str, Any]:
    schema = tool.get("input_schema") or tool.get("inputSchema")
    return {
        "name": tool["name"],
        "description": tool.get("description") or "",
        "input_schema": schema if isinstance(schema, dict) else {"type": "object"},
        "annotations": tool.get("annotations") if isinstance(tool.get("annotations"), dict) else {},
    }


def _fill_sdk_url(info: dict[str, Any]) -> str:
    """python_sdk_url with the crawl's sample config filled in as `{config_b64}`."""
    template = info.get("python_sdk_url") or ""
    sample = (info.get("python_sdk_config") or "{}").encode()
    return template.replace("{config_b64}", base64.b64encode(sample).decode())


def _given(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return None if text.lower() in NOT_GIVEN else text


def _looks_like_jsonl(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) > 1 and all(line.lstrip().startswith("{") for line in lines[:3])


def _load_jsonl(text: str, source: str, limits: LimitsConfig) -> CatalogLoad:
    entries: list[tuple[int, Any]] = []
    rejections: list[CatalogRejection] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) > limits.catalog_entry_bytes:  # not parsed: its size is enough to know
            cap = limits.catalog_entry_bytes
            rejections.append(
                CatalogRejection(source=source, index=line_number, reason="entry_too_large",
                                 detail=f"{len(line)} characters (limits.catalog_entry_bytes: {cap})")
            )  # fmt: skip
            continue
        try:
            entries.append((line_number, json.loads(line)))
        except json.JSONDecodeError as error:
            rejections.append(
                CatalogRejection(source=source, index=line_number, reason="invalid_json",
                                 detail=str(error))
            )  # fmt: skip
    specs: list[AnySpec] = []
    seen: dict[str, int] = {}
    for line_number, entry in entries:
        parsed = parse_entry(entry, source=source, index=line_number, limits=limits)
        if isinstance(parsed, CatalogRejection):
            rejections.append(parsed)
        elif parsed.server_id in seen:
            rejections.append(
                CatalogRejection(source=source, index=line_number, name=parsed.name,
                                 reason="duplicate_name",
                                 detail=f"same source and name as line {seen[parsed.server_id]}")
            )  # fmt: skip
        else:
            seen[parsed.server_id] = line_number
            specs.append(parsed)
    return CatalogLoad(specs=specs, rejections=sorted(rejections, key=lambda r: r.index or 0))


def _load_document(text: str, source: str, limits: LimitsConfig, *, is_json: bool) -> CatalogLoad:
    try:
        document = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        return _rejected_file(source, "invalid_json" if is_json else "invalid_yaml", str(error))
    if isinstance(document, dict) and "servers" in document:
        entries = document["servers"]
    elif isinstance(document, dict) and is_smithery_record(document):
        entries = [document]
    else:
        entries = document
    if not isinstance(entries, list):
        return _rejected_file(source, "missing_servers", "expected `servers:` holding a list")
    specs, rejections = parse_catalog_entries(entries, source=source, limits=limits)
    return CatalogLoad(specs=specs, rejections=rejections)


def _rejected_file(source: str, reason: str, detail: str) -> CatalogLoad:
    return CatalogLoad(rejections=[CatalogRejection(source=source, reason=reason, detail=detail)])


def _short_validation_error(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
        for issue in error.errors()[:5]
    ]
    return "; ".join(problems)
