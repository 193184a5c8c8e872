"""Chat formats for trainers, built from a trajectory's OpenAI-format messages.

- OpenAI: `{"messages": [...], "tools": [...]}` as in OpenAI fine-tuning files; assistant
  messages carry `weight` 1 (trained on), others are context. `loss_mask` repeats that per message.
- ShareGPT/Hermes: `{"conversations": [{"from", "value"}], ...}` with tool calls written as
  `<tool_call>{"name", "arguments"}</tool_call>` inside the assistant turn, tool results as
  `<tool_response>` turns and the tool list in the system turn inside `<tools>` (the Hermes
  template the Toucan SFT models were trained with). `loss_mask` is True on assistant turns.
"""

from __future__ import annotations

import json
from typing import Any

HERMES_TOOLS_PREAMBLE = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user query. "
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags."
)
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt", "tool": "tool"}


def parse_arguments(raw: Any) -> Any:
    """Tool-call arguments as a value: OpenAI sends a JSON string, some agents a dict."""
    if isinstance(raw, str):
        return json.loads(raw) if raw.strip() else {}
    return raw if raw is not None else {}


def text_of(content: Any) -> str:
    """Message content as text; list-of-parts content is joined."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def to_openai_chat(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI fine-tuning layout with a per-message loss mask on assistant turns."""
    out_messages = []
    for message in messages:
        entry: dict[str, Any] = {
            "role": message["role"],
            "content": text_of(message.get("content")),
        }
        if message.get("tool_calls"):
            entry["tool_calls"] = [
                {
                    "id": call.get("id", f"call_{i}"),
                    "type": "function",
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": call["function"]["arguments"]
                        if isinstance(call["function"].get("arguments"), str)
                        else json.dumps(call["function"].get("arguments") or {}),
                    },
                }
                for i, call in enumerate(message["tool_calls"])
            ]
        if message["role"] == "tool":
            entry["tool_call_id"] = message.get("tool_call_id", "")
            if message.get("name"):
                entry["name"] = message["name"]
        if message["role"] == "assistant":
            entry["weight"] = 1
        out_messages.append(entry)
    return {
        "messages": out_messages,
        "tools": tools,
        "loss_mask": [m["role"] == "assistant" for m in out_messages],
    }


def hermes_system_prompt(system_text: str, tools: list[dict[str, Any]]) -> str:
    if not tools:
        return system_text
    tool_lines = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return f"{system_text}\n\n{HERMES_TOOLS_PREAMBLE}\n<tools>\n{tool_lines}\n</tools>".lstrip()


def hermes_assistant_text(message: dict[str, Any]) -> str:
    parts = [text_of(message.get("content"))] if message.get("content") else []
    for call in message.get("tool_calls") or []:
        payload = {
            "name": call["function"]["name"],
            "arguments": parse_arguments(call["function"].get("arguments")),
        }
        parts.append(f"<tool_call>\n{json.dumps(payload, ensure_ascii=False)}\n</tool_call>")
    return "\n".join(parts)


def to_sharegpt_hermes(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> dict[str, Any]:
    """ShareGPT conversations in the Hermes tool-calling template, with a loss mask."""
    conversations: list[dict[str, str]] = []
    system_text = ""
    for message in messages:
        role = message["role"]
        if role == "system":
            system_text = text_of(message.get("content"))
            continue
        if role == "assistant":
            value = hermes_assistant_text(message)
        elif role == "tool":
            value = f"<tool_response>\n{text_of(message.get('content'))}\n</tool_response>"
        else:
            value = text_of(message.get("content"))
        conversations.append({"from": SHAREGPT_ROLES.get(role, role), "value": value})
    conversations.insert(0, {"from": "system", "value": hermes_system_prompt(system_text, tools)})
    return {
        "conversations": conversations,
        "tools": json.dumps(tools, ensure_ascii=False),
        "loss_mask": [turn["from"] == "gpt" for turn in conversations],
    }


def iter_tool_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every tool call the assistant made, in order (the `function` part of each)."""
    return [
        call.get("function", {})
        for message in messages
        if message.get("role") == "assistant"
        for call in message.get("tool_calls") or []
    ]
