"""Lenient parsing of model text into pydantic records (pure functions)."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound=BaseModel)
FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


class ModelReply(BaseModel):
    """The base of every record parsed from a model's reply: keys the model adds beyond the
    schema are ignored (small models add commentary), never a validation error. This
    docstring does not reach a subclass's JSON schema (pydantic reads each class's own
    `__doc__`), so the schema sent to the model is the subclass's alone."""

    model_config = ConfigDict(extra="ignore")


def find_json_value(text: str) -> Any:
    """The first JSON object (or array) in `text`: whole text, fenced block, or embedded.

    Raises ValueError when there is none.
    """
    stripped = text.strip()
    candidates = [stripped, *(block.strip() for block in FENCE.findall(text))]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    decoder = json.JSONDecoder()
    for index, char in enumerate(text):
        if char in "{[":
            try:
                value, _ = decoder.raw_decode(text, index)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict | list):
                return value
    raise ValueError("no JSON object found in the reply")


def parse_reply_into(text: str, schema: type[T]) -> T:
    """Validate the first JSON value of `text` into `schema`.

    Raises ValueError (no JSON) or pydantic ValidationError (wrong shape).
    """
    value = find_json_value(text)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]  # small models like to wrap the object in a list
    return schema.model_validate(value)


def describe_parse_error(error: Exception) -> str:
    """A short, model-readable account of what was wrong, for the repair prompt."""
    if isinstance(error, ValidationError):
        problems = [
            f"{'.'.join(str(part) for part in issue['loc']) or '(root)'}: {issue['msg']}"
            for issue in error.errors()[:10]
        ]
        return "The JSON did not match the schema: " + "; ".join(problems)
    return f"The reply was not valid JSON: {error}"


def response_format_for(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAI `response_format` asking for JSON that follows the record's schema."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": schema.__name__,
            "schema": schema.model_json_schema(),
            "strict": False,
        },
    }
