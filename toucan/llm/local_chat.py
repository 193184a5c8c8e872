"""The embedded model's tool-calling chat handler and its server entry point.

Runs inside the llama-cpp-python server process (`python -m toucan.llm.local_chat ...`, same
arguments as `python -m llama_cpp.server`). llama-cpp-python's own `chatml-function-calling`
cannot carry an agent loop: without `tool_choice` it hides the tools from the model, in `auto`
mode its text answers come back empty, it drops `tool` messages from the prompt, and the server
rejects an assistant message whose content is null (what OpenAI clients send with tool calls).
`toucan-function-calling` renders ChatML with the tools in the system prompt, the assistant's
tool calls and the tool results; a grammar makes the model choose between a message and one
tool call, whose arguments are then written under the tool's JSON schema (open strings and
lists bounded). Each offered tool is called at most once per user message, and a call that
repeats an answered one becomes the message: a 135M model otherwise repeats its last call until
the turn budget runs out. Both the message and the arguments are bounded by the request's
max_tokens. Imports only llama_cpp and the stdlib.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import PurePath
from typing import Any

HANDLER_NAME = "toucan-function-calling"
SAMPLING_KEYS = (
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
)
ARGUMENT_STRING_CHARS = 120  # bounds on tool-call arguments, see `bounded_schema`
ARGUMENT_ARRAY_ITEMS = 4
DECISION_TOKENS = 32  # "functions.<name>:" is at most a few tokens; the grammar ends it
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# a GGUF file is named <model>[.-]<quantization>.gguf (llama.cpp's quantization types, e.g.
# Q4_1, Q4_K_M, IQ3_XXS, F16, BF16)
QUANTIZATION_SUFFIX = re.compile(r"[.-](?:I?Q\d\w*|B?F16|F32)$", re.IGNORECASE)
TOOLS_INTRO = (
    "You can call these tools. To call one, reply with `functions.<name>:` and its JSON "
    "arguments on the next line. Once the tools have returned what you need, reply with "
    "`message:` and your answer to the user, using what they returned."
)


def served_model_name(model_path: str) -> str:
    """The model a GGUF file holds, from its file name: `.../SmolLM2-135M-Instruct.Q4_1.gguf`
    -> `SmolLM2-135M-Instruct`. Its `general.name` metadata is no help: the SmolLM2 file says
    "Smollm2 135M 8k Lc100K Mix1 Ep2". Replies name this model, so rows record what served them
    rather than the deployment name the client asked for."""
    stem = PurePath(model_path).name
    if stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    return QUANTIZATION_SUFFIX.sub("", stem) or stem


def render_tools(tools: list[dict[str, Any]]) -> str:
    lines = [TOOLS_INTRO]
    for tool in tools:
        function = tool.get("function", {})
        parameters = json.dumps(function.get("parameters") or {}, separators=(",", ":"))
        lines.append(f"- {function.get('name')}: {function.get('description') or ''}")
        lines.append(f"  parameters: {parameters}")
    return "\n".join(lines)


def render_message(message: dict[str, Any]) -> str:
    role = message.get("role", "user")
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if role == "assistant":
        parts = [f"message:\n{content}"] if content else []
        for call in message.get("tool_calls") or []:
            function = call.get("function", {})
            parts.append(f"functions.{function.get('name')}:\n{function.get('arguments') or '{}'}")
        content = "\n".join(parts)
    elif role == "tool":
        name = message.get("name") or "tool"
        content = f"{name} returned:\n{content}"
    return f"{IM_START}{role}\n{content}{IM_END}\n"


def render_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """ChatML with the tools appended to the system prompt (one is added if missing)."""
    messages = list(messages)
    if tools:
        if messages and messages[0].get("role") == "system":
            first = dict(messages[0])
            first["content"] = f"{first.get('content') or ''}\n\n{render_tools(tools)}"
            messages[0] = first
        else:
            messages.insert(0, {"role": "system", "content": render_tools(tools)})
    return "".join(render_message(m) for m in messages) + f"{IM_START}assistant\n"


def decision_grammar(names: list[str]) -> str:
    choices = " | ".join(f'"functions.{name}:"' for name in names)
    return f'root ::= "message:" | {choices}\n'


def usage_of(*completions: dict[str, Any]) -> dict[str, int]:
    prompt = max(c["usage"]["prompt_tokens"] for c in completions)
    completion = sum(c["usage"]["completion_tokens"] for c in completions)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat_response(
    model: str, message: dict[str, Any], finish_reason: str, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": usage,
    }


def bounded_schema(schema: Any) -> Any:
    """A copy of a tool's parameter schema with every unbounded string and array bounded, for
    the arguments grammar only (the tool still validates against its own schema): a small
    model otherwise fills an open list or string until max_tokens cuts the JSON."""
    if isinstance(schema, list):
        return [bounded_schema(value) for value in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: bounded_schema(value) for key, value in schema.items()}
    if bounded.get("type") == "string" and "enum" not in bounded:
        bounded.setdefault("maxLength", ARGUMENT_STRING_CHARS)
    if bounded.get("type") == "array":
        bounded.setdefault("maxItems", ARGUMENT_ARRAY_ITEMS)
    return bounded


def schema_grammar(llama_grammar: Any, schema: Any, verbose: bool) -> Any:
    try:
        return llama_grammar.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=verbose)
    except Exception:  # a schema the converter cannot handle: any JSON value
        return llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=verbose)


def chosen_tool(
    tools: list[dict[str, Any]] | None, tool_choice: Any
) -> tuple[list[dict[str, Any]], str | None]:
    """(tools to show, the one tool forced by tool_choice or None)."""
    if not tools or tool_choice == "none":
        return [], None
    if isinstance(tool_choice, dict):
        return tools, tool_choice.get("function", {}).get("name")
    return tools, None  # "auto", "required" or absent: the model decides


def toucan_function_calling(
    llama: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
    temperature: float = 0.2,
    max_tokens: int | None = None,
    stop: Any = None,
    seed: int | None = None,
    response_format: dict[str, Any] | None = None,
    stream: bool = False,
    **sampling: Any,
) -> dict[str, Any]:
    """A llama-cpp-python chat completion handler (non-streaming). The request's sampling
    settings (repeat_penalty, top_p, ...) apply to every generation step; without the
    server's repeat penalty the model loops ("1.1.1.1...") until a field or reply is full."""
    from llama_cpp import llama_grammar

    if stream:
        raise ValueError(f"{HANDLER_NAME} does not stream")
    shown, forced = chosen_tool(tools, tool_choice)
    prompt = render_prompt(messages, shown)
    model = served_model_name(str(getattr(llama, "model_path", "local")))
    options: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
    options.update({key: sampling[key] for key in SAMPLING_KEYS if sampling.get(key) is not None})
    stops = [IM_END, *([stop] if isinstance(stop, str) else (stop or []))]
    if not shown:
        grammar = None
        if response_format and response_format.get("type") == "json_object":
            schema = response_format.get("schema")
            grammar = (
                schema_grammar(llama_grammar, schema, llama.verbose)
                if schema
                else llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF)
            )
        done = llama.create_completion(prompt=prompt, stop=stops, grammar=grammar, **options)
        text = done["choices"][0]["text"]
        message = {"role": "assistant", "content": text}
        return chat_response(model, message, done["choices"][0]["finish_reason"], usage_of(done))
    names = [tool["function"]["name"] for tool in shown]
    # each tool at most once per user message: a small model otherwise calls the same tool
    # turn after turn and never answers
    uncalled = [name for name in names if name not in called_names(messages)]
    steps = []
    if forced is None and uncalled:
        decided = llama.create_completion(
            prompt=prompt,
            temperature=0.0,
            max_tokens=DECISION_TOKENS,
            grammar=llama_grammar.LlamaGrammar.from_string(decision_grammar(uncalled)),
        )
        steps.append(decided)
        choice = decided["choices"][0]["text"].strip()
        forced = choice[len("functions.") : -1] if choice.startswith("functions.") else None
    if forced is None or forced not in names:
        done = llama.create_completion(prompt=f"{prompt}message:\n", stop=stops, **options)
        steps.append(done)
        message = {"role": "assistant", "content": done["choices"][0]["text"].strip()}
        return chat_response(model, message, done["choices"][0]["finish_reason"], usage_of(*steps))
    tool = next(t for t in shown if t["function"]["name"] == forced)
    parameters = bounded_schema(tool["function"].get("parameters") or {})
    grammar = schema_grammar(llama_grammar, parameters, False)
    done = llama.create_completion(
        prompt=f"{prompt}functions.{forced}:\n", stop=stops, grammar=grammar, **options
    )
    steps.append(done)
    arguments = done["choices"][0]["text"].strip() or "{}"
    if call_key(forced, arguments) in answered_calls(messages):
        # a small model repeats the call it just saw answered; the answer is what is due
        done = llama.create_completion(prompt=f"{prompt}message:\n", stop=stops, **options)
        steps.append(done)
        message = {"role": "assistant", "content": done["choices"][0]["text"].strip()}
        return chat_response(model, message, done["choices"][0]["finish_reason"], usage_of(*steps))
    call = {
        "id": f"call_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {"name": forced, "arguments": arguments},
    }
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return chat_response(model, message, "tool_calls", usage_of(*steps))


def call_key(name: str, arguments: str) -> str:
    try:
        return name + json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        return name + arguments.strip()


def calls_since_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `function` parts of the calls made since the user's last message."""
    since_user: list[dict[str, Any]] = []
    for message in messages:
        since_user = [] if message.get("role") == "user" else [*since_user, message]
    return [
        call.get("function", {})
        for message in since_user
        for call in message.get("tool_calls") or []
    ]


def called_names(messages: list[dict[str, Any]]) -> set[str]:
    return {function.get("name", "") for function in calls_since_user(messages)}


def answered_calls(messages: list[dict[str, Any]]) -> set[str]:
    """The calls made since the user's last message (their results are in the prompt)."""
    return {
        call_key(function.get("name", ""), function.get("arguments") or "{}")
        for function in calls_since_user(messages)
    }


class NullContentFix:
    """ASGI middleware: drop `content: null` from request messages, which OpenAI clients send
    with tool calls and llama-cpp-python's request model rejects."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            event = await receive()
            chunks.append(event.get("body", b""))
            if not event.get("more_body"):
                break
        body = fix_null_content(b"".join(chunks))
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, replay, send)


def fix_null_content(body: bytes) -> bytes:
    try:
        request = json.loads(body)
    except ValueError:
        return body
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        return body
    for message in request["messages"]:
        if isinstance(message, dict) and message.get("content", "") is None:
            del message["content"]
    return json.dumps(request).encode()


def main() -> None:
    """`python -m llama_cpp.server`, with this handler registered and the request fix."""
    import argparse
    import os

    import uvicorn
    from llama_cpp.llama_chat_format import register_chat_completion_handler
    from llama_cpp.server.app import create_app
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    register_chat_completion_handler(HANDLER_NAME)(toucan_function_calling)
    parser = argparse.ArgumentParser(description="toucan's embedded model server")
    add_args_from_model(parser, Settings)
    args = parser.parse_args()
    server_settings = parse_model_from_args(ServerSettings, args)
    model_settings = [parse_model_from_args(ModelSettings, args)]
    app = create_app(server_settings=server_settings, model_settings=model_settings)
    uvicorn.run(
        NullContentFix(app),
        host=os.getenv("HOST", server_settings.host),
        port=int(os.getenv("PORT", server_settings.port)),
    )


if __name__ == "__main__":
    main()
