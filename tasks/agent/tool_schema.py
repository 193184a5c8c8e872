"""An MCP tool -> the OpenAI-format tool definition a provider family accepts.

LiteLLM translates OpenAI-format tools for Anthropic and Gemini, but passes on (or silently
drops) what those providers refuse, so the definition handed to it must already meet the
target's rules (toucan/llm/tool_rules.py). Steps, each recording a snake_case note:
local `$ref`s inlined (tasks/agent/schema_walk.py), the root made an object (root combinators
lifted into one object, their alternatives told in the description), refused keywords
dropped or rewritten (Gemini's OpenAPI subset, OpenAI strict mode), descriptions cut with a
visible marker. The server's own schema is never changed: calls are checked against it.
"""

from __future__ import annotations

from typing import Any

from mcp_env.limits import cut_text
from tasks.agent.schema_walk import inline_refs, map_subschemas
from tasks.agent.strict_schema import strict_parameters
from toucan.llm.tool_rules import ToolRules

ROOT_ALTERNATIVES = {"anyOf": "root_any_of_lifted", "oneOf": "root_one_of_lifted"}
GEMINI_FORMATS = ("enum", "date-time")  # Gemini API: "must be either 'enum' or 'date-time'"


def smallest(*limits: int | None) -> int | None:
    """The tightest of the limits that are set (None when none is)."""
    present = [limit for limit in limits if limit is not None]
    return min(present) if present else None


def is_object_like(schema: Any) -> bool:
    """A subschema that constrains an object: `type: object`, or no type at all."""
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type", "object")
    return kind == "object" or (isinstance(kind, list) and "object" in kind)


def merge_all_of(root: dict[str, Any], notes: set[str]) -> dict[str, Any]:
    """A root `allOf` folded into the root: properties united (the first definition of a
    name wins), `required` united, an inner `anyOf`/`oneOf` kept for lifting."""
    members = root.pop("allOf", None)
    if not isinstance(members, list):
        return root
    notes.add("root_all_of_merged")
    properties = dict(root.get("properties") or {})
    required = list(root.get("required") or [])
    for member in (m for m in members if isinstance(m, dict)):
        member = merge_all_of(dict(member), notes)
        if not is_object_like(member):
            notes.add("root_combinator_dropped")
            continue
        for name, sub in (member.get("properties") or {}).items():
            properties.setdefault(name, sub)
        required += [n for n in member.get("required") or [] if n not in required]
        for key in ROOT_ALTERNATIVES:
            if key in member and key not in root:
                root[key] = member[key]
    return {**root, "properties": properties, "required": required}


def describe_alternative(alternative: dict[str, Any]) -> str:
    names = alternative.get("required") or list(alternative.get("properties") or {})
    return ", ".join(str(name) for name in names) or "no arguments"


def lift_alternatives(root: dict[str, Any], notes: set[str]) -> tuple[dict[str, Any], str]:
    """A root `anyOf`/`oneOf` of objects -> one object with the union of their properties,
    required only what every alternative requires; the sentence telling the alternatives."""
    sentences = []
    for key in ROOT_ALTERNATIVES:
        alternatives = root.pop(key, None)
        if not isinstance(alternatives, list):
            continue
        objects = [dict(a) for a in alternatives if is_object_like(a)]
        if len(objects) < len(alternatives):
            notes.add("root_combinator_dropped")
        if not objects:
            continue
        notes.add(ROOT_ALTERNATIVES[key])
        properties = dict(root.get("properties") or {})
        for alternative in objects:
            for name, sub in (alternative.get("properties") or {}).items():
                properties.setdefault(name, sub)
        shared = set.intersection(*(set(a.get("required") or []) for a in objects))
        required = list(root.get("required") or [])
        required += [
            n for n in objects[0].get("required") or [] if n in shared and n not in required
        ]
        root = {**root, "properties": properties, "required": required}
        labels = "; ".join(f"({i}) {describe_alternative(a)}" for i, a in enumerate(objects, 1))
        quantity = "exactly one" if key == "oneOf" else "at least one"
        sentences.append(f"Arguments: {quantity} of these sets: {labels}.")
    return root, " ".join(sentences)


def with_object_type(root: dict[str, Any], notes: set[str]) -> dict[str, Any]:
    """`type: object` and a `properties` map at the root; a root of another type (which MCP
    cannot call with: arguments are an object) becomes an open object."""
    kind = root.get("type")
    if kind is None:
        notes.add("root_type_added")
    elif isinstance(kind, list) and "object" in kind:
        notes.add("root_type_narrowed")
    elif kind != "object":
        notes.add("non_object_root")
        return {"type": "object", "properties": {}}
    root = {**root, "type": "object"}
    if not isinstance(root.get("properties"), dict):
        root["properties"] = {}
    if "required" in root and not (
        isinstance(root["required"], list) and all(isinstance(n, str) for n in root["required"])
    ):
        notes.add("bad_required_dropped")
        root.pop("required")
    if root.get("required") == []:
        root.pop("required")
    return root


def object_root(schema: Any, rules: ToolRules, notes: set[str]) -> tuple[dict[str, Any], str]:
    """(parameters whose root is an object the provider takes, a sentence for the function
    description, empty unless root alternatives were lifted)."""
    if not isinstance(schema, dict):
        notes.add("invalid_schema")
        schema = {}
    root, sentence = dict(schema), ""
    if rules.lift_root_combinators:
        root, sentence = lift_alternatives(merge_all_of(root, notes), notes)
    for key in ("allOf", *ROOT_ALTERNATIVES):
        members = root.get(key)
        if key in root and not (isinstance(members, list) and all(map(is_object_like, members))):
            notes.add("root_combinator_dropped")  # no object (MCP's arguments) could match it
            root.pop(key)
    root = with_object_type(root, notes)
    if rules.root_keys is not None and set(root) - rules.root_keys:
        notes.add("root_keyword_dropped")
        root = {key: value for key, value in root.items() if key in rules.root_keys}
    return root, sentence


def nullable_from_type(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0 has one `type` and `nullable`: ["string", "null"] -> string + nullable;
    several types -> `anyOf` of each; a `{"type": "null"}` alternative -> nullable."""
    kind = node.get("type")
    if isinstance(kind, list) or kind == "null":
        kinds = [k for k in (kind if isinstance(kind, list) else [kind]) if k != "null"]
        node.pop("type")
        if "null" in (kind if isinstance(kind, list) else [kind]):
            node["nullable"] = True
        if len(kinds) == 1:
            node["type"] = kinds[0]
        elif kinds and "anyOf" not in node:
            node["anyOf"] = [{"type": k} for k in kinds]
    alternatives = node.get("anyOf")
    if isinstance(alternatives, list) and {"type": "null"} in alternatives:
        node["anyOf"] = [a for a in alternatives if a != {"type": "null"}]
        node["nullable"] = True
        if len(node["anyOf"]) == 1 and isinstance(node["anyOf"][0], dict):
            node = {**node.pop("anyOf")[0], **node}
    return node


def to_openapi_subset(schema: dict[str, Any], notes: set[str]) -> dict[str, Any]:
    """One schema node rewritten into the OpenAPI 3.0 subset Gemini reads (its keyword
    allow-list is applied afterwards)."""
    node = nullable_from_type(dict(schema))
    if "oneOf" in node:
        node.setdefault("anyOf", node.pop("oneOf"))
    if "const" in node:
        value = node.pop("const")
        node.update({"enum": [value]} if isinstance(value, str) else {})
    enum = node.get("enum")
    if enum is not None and not (
        isinstance(enum, list) and all(isinstance(v, str) and v for v in enum)
    ):
        notes.add("enum_dropped")  # Gemini takes non-empty string enums only
        node.pop("enum")
    if node.get("format") not in (None, *GEMINI_FORMATS):
        node.pop("format")
    if node.get("type") == "array" and not isinstance(node.get("items"), dict):
        node["items"] = {"type": "object"}  # Gemini requires `items` on every array
    if node.get("type") == "object" and not node.get("properties"):
        node.pop("properties", None)  # Gemini refuses an empty `properties` map
        node.pop("required", None)
    elif isinstance(node.get("properties"), dict) and isinstance(node.get("required"), list):
        node["required"] = [n for n in node["required"] if n in node["properties"]]
    return node


def apply_keyword_rules(
    schema: dict[str, Any], rules: ToolRules, description_chars: int | None, notes: set[str]
) -> dict[str, Any]:
    """Every schema node rewritten for the provider: OpenAPI subset, refused keywords
    dropped, descriptions cut to `description_chars`."""

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if rules.openapi_subset:
            node = to_openapi_subset(node, notes)
        if rules.keywords is not None and set(node) - rules.keywords:
            notes.add("keyword_dropped")
            node = {key: value for key, value in node.items() if key in rules.keywords}
        description = node.get("description")
        if isinstance(description, str) and len(description) > (
            description_chars or len(description)
        ):
            notes.add("parameter_description_cut")
            node = {**node, "description": cut_text(description, description_chars)}
        return map_subschemas(node, walk)

    return walk(schema)


def function_description(
    description: str, sentence: str, chars: int | None, notes: set[str]
) -> str:
    """The tool's description cut so that `sentence` (the lifted alternatives) still fits
    after it within `chars`; the whole is never longer than `chars`."""
    room = None if chars is None or not sentence else max(0, chars - len(sentence) - 1)
    cut = cut_text(description, room if sentence else chars)
    whole = cut_text(f"{cut} {sentence}".strip(), chars)
    if len(whole) < len(f"{description} {sentence}".strip()):
        notes.add("description_cut")
    return whole


def provider_definition(
    name: str,
    description: str,
    input_schema: Any,
    rules: ToolRules,
    description_chars: int | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """(the OpenAI-format tools entry for `rules`, sorted note tokens). `description_chars`
    is an extra, stricter user cap (`models.prompt_budget.description_chars`). The name must
    already obey the rules (tasks/agent/naming.py). Never raises on a bad schema."""
    notes: set[str] = set()
    schema = inline_refs(input_schema, notes) if isinstance(input_schema, dict) else input_schema
    parameters, sentence = object_root(schema, rules, notes)
    parameter_chars = smallest(rules.parameter_description_chars, description_chars)
    parameters = apply_keyword_rules(parameters, rules, parameter_chars, notes)
    chars = smallest(rules.description_chars, description_chars)
    function: dict[str, Any] = {
        "name": name,
        "description": function_description(description, sentence, chars, notes),
        "parameters": parameters,
    }
    if rules.strict:
        strict = strict_parameters(parameters)
        if strict is None:
            notes.add("strict_unsupported")  # offered without strict rather than refused
        else:
            function.update(parameters=strict, strict=True)
    return {"type": "function", "function": function}, sorted(notes)
