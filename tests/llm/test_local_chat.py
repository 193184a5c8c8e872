"""toucan's chat handler for the embedded model: the prompt it renders, the calls it will not
repeat, the request fix; and, with the model, a tool call followed by an answer."""

from __future__ import annotations

import json

import httpx
import pytest

from tasks.agent.loop import PendingCall, assistant_message
from toucan.config import LocalModelConfig
from toucan.llm.local_chat import (
    answered_calls,
    bounded_schema,
    call_key,
    called_names,
    decision_grammar,
    fix_null_content,
    render_prompt,
    served_model_name,
)
from toucan.llm.local_server import LocalModelServer

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant with access to tools."},
    {"role": "user", "content": "What is 17 plus 25?"},
]
CALLED = [
    *QUESTION,
    assistant_message("", [PendingCall(id="c1", name="add", arguments='{"a":17,"b":25}')]),
    {"role": "tool", "tool_call_id": "c1", "name": "add", "content": "42"},
]


def test_the_prompt_shows_tools_calls_and_results_and_ends_with_the_assistant_turn() -> None:
    prompt = render_prompt(CALLED, [ADD])
    assert "- add: Add two integers." in prompt and '"required":["a","b"]' in prompt
    assert 'functions.add:\n{"a":17,"b":25}' in prompt
    assert "<|im_start|>tool\nadd returned:\n42<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "functions" not in render_prompt(QUESTION, [])


def test_the_served_model_is_named_from_the_gguf_file_without_its_quantization() -> None:
    assert served_model_name("/x/SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct"
    assert served_model_name("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf") == "Qwen2.5-0.5B-Instruct"
    assert served_model_name("Llama-3.2-1B-Instruct-IQ3_XXS.gguf") == "Llama-3.2-1B-Instruct"
    assert served_model_name("tiny-f16.gguf") == "tiny"
    assert served_model_name("model.gguf") == "model"  # nothing to strip
    assert served_model_name("Q4_1.gguf") == "Q4_1"  # never an empty name


def test_the_decision_grammar_allows_a_message_or_one_of_the_tools() -> None:
    assert decision_grammar(["add", "echo"]) == (
        'root ::= "message:" | "functions.add:" | "functions.echo:"\n'
    )


def test_calls_answered_since_the_last_user_message_are_known_whatever_their_spacing() -> None:
    assert answered_calls(CALLED) == {call_key("add", '{ "b": 25, "a": 17 }')}
    assert answered_calls([*CALLED, {"role": "user", "content": "And 1 plus 1?"}]) == set()


def test_argument_grammars_bound_open_strings_and_lists_but_keep_enums_and_set_bounds() -> None:
    schema = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "string"}},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "name": {"type": "string", "maxLength": 10},
        },
    }
    bounded = bounded_schema(schema)["properties"]
    assert bounded["items"]["maxItems"] == 4 and bounded["items"]["items"]["maxLength"] == 120
    assert "maxLength" not in bounded["mode"] and bounded["name"]["maxLength"] == 10
    assert "maxItems" not in schema["properties"]["items"]  # the tool's own schema is untouched


def test_a_tool_called_since_the_last_user_message_is_not_offered_again() -> None:
    assert called_names(CALLED) == {"add"}
    assert called_names([*CALLED, {"role": "user", "content": "Once more?"}]) == set()


def test_null_content_is_dropped_from_requests_and_other_bodies_pass_unchanged() -> None:
    fixed = json.loads(fix_null_content(json.dumps({"messages": CALLED}).encode()))
    assert "content" not in fixed["messages"][2]
    assert fixed["messages"][3]["content"] == "42"
    assert fix_null_content(b"not json") == b"not json"


@pytest.mark.model
def test_the_embedded_model_calls_a_tool_then_answers_from_its_result() -> None:
    pytest.importorskip("llama_cpp")
    config = LocalModelConfig(n_threads=1, n_ctx=2048)
    with (
        LocalModelServer(config) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as client,
    ):
        first = client.post(
            "/chat/completions", json={"messages": QUESTION, "tools": [ADD], "max_tokens": 64}
        ).json()["choices"][0]["message"]
        [call] = first["tool_calls"]
        assert call["function"]["name"] == "add"
        assert set(json.loads(call["function"]["arguments"])) == {"a", "b"}
        second = client.post(
            "/chat/completions", json={"messages": CALLED, "tools": [ADD], "max_tokens": 64}
        )
    assert second.status_code == 200  # the null content of the earlier call is accepted
    message = second.json()["choices"][0]["message"]
    assert message["content"] and not message.get("tool_calls")  # no repeat of the same call
