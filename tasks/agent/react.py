"""The ReAct text protocol: tools described in the system prompt, calls parsed from the text.

For teachers without native tool calling. A reply holds either one or more
`Action:` / `Action Input:` pairs (run in parallel) or a `Final Answer:`; a reply with neither is
taken as the final answer, as a user reading it would.
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel

from tasks.agent.naming import ExposedTool

ACTION = re.compile(
    r"^\s*Action\s*:\s*(?P<name>[^\n]+?)\s*\n+\s*Action\s+Input\s*:\s*(?P<input>.*?)"
    r"(?=^\s*(?:Action\s*:|Thought\s*:|Observation|Final\s+Answer\s*:)|\Z)",
    re.MULTILINE | re.DOTALL | re.IGNORECASE,
)
FINAL = re.compile(r"Final\s+Answer\s*:\s*(?P<answer>.*)\Z", re.DOTALL | re.IGNORECASE)
FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
STOP_SEQUENCES = ["\nObservation"]


class ParsedAction(BaseModel):
    name: str
    arguments: str  # JSON text as the model wrote it (after trimming fences)


class ParsedReply(BaseModel):
    actions: list[ParsedAction]
    final_answer: str | None  # None while the model still calls tools


def parse_react_reply(text: str) -> ParsedReply:
    """Split a ReAct reply into its actions or its final answer."""
    actions = [
        ParsedAction(
            name=match["name"].strip().strip("`\"'"), arguments=clean_arguments(match["input"])
        )
        for match in ACTION.finditer(text)
    ]
    if actions:
        return ParsedReply(actions=actions, final_answer=None)
    final = FINAL.search(text)
    return ParsedReply(actions=[], final_answer=(final["answer"] if final else text).strip())


def clean_arguments(raw: str) -> str:
    """The JSON object of an Action Input: fences removed, the first complete object kept."""
    text = FENCE.sub("", raw.strip()).strip()
    start = text.find("{")
    if start < 0:
        return text or "{}"
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return text
    return text[start:end]


def describe_tools(exposed: list[ExposedTool]) -> list[dict[str, str]]:
    """Template variables for the tool list in the ReAct system prompt: the offered
    definitions, as the native tools API would have carried them."""
    functions = [tool.openai_schema()["function"] for tool in exposed]
    return [
        {
            "name": function["name"],
            "description": function["description"],
            "parameters_json": json.dumps(
                function["parameters"], ensure_ascii=False, sort_keys=True
            ),
        }
        for function in functions
    ]
