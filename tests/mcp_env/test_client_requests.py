"""The client side of a session against real servers (tests/servers/quirks): sampling and
elicitation answered and recorded, progress extending a call's timeout, list_changed."""

from __future__ import annotations

import anyio
import mcp_types as types
import pytest

from mcp_env.client_callbacks import to_sampling_request
from mcp_env.environment import make_pool
from mcp_env.health import check_server
from mcp_env.server_requests import (
    ElicitationReply,
    ElicitationRequest,
    PolicyHandler,
    SamplingReply,
    SamplingRequest,
    ServerExchange,
    answer_by_policy,
)
from mcp_env.session import open_session
from tests.mcp_env.conftest import CONNECT_TIMEOUT_S, quirk_spec, read_raw_log
from toucan.config import McpConfig
from toucan.errors import ToolTimeout

pytestmark = pytest.mark.anyio

# progress_short.json: long_job and silent_job run 3 s; long_job reports progress every 0.4 s
IDLE_TIMEOUT_S = 1.5


class ScriptedHandler:
    """A ServerRequestHandler answering with fixed replies and keeping what it saw."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.sampling: list[SamplingRequest] = []
        self.exchanges: list[ServerExchange] = []

    async def sample(self, request: SamplingRequest) -> SamplingReply:
        self.sampling.append(request)
        if self.fail:
            raise RuntimeError("the handler has a bug")
        return SamplingReply(text="hello, summarised", model="fake/model", answered_by="Fake")

    async def elicit(self, request: ElicitationRequest) -> ElicitationReply:
        return ElicitationReply(action="accept", content={"ok": True}, answered_by="tester")

    def record(self, exchange: ServerExchange) -> None:
        self.exchanges.append(exchange)


async def test_sampling_and_elicitation_go_to_the_calls_handler_and_are_recorded(tmp_path):
    handler = ScriptedHandler()
    spec = quirk_spec("sampling_elicitation.json", log=tmp_path / "raw.log")
    async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
        sampled = await session.call_tool("summarise_with_llm", {}, handler=handler)
        elicited = await session.call_tool("confirm_delete", {}, handler=handler)
    assert not sampled.is_error and "hello, summarised" in sampled.text
    assert '"action": "accept"' in elicited.text and '"ok": true' in elicited.text
    [request] = handler.sampling
    assert request.messages == [{"role": "user", "content": "Summarise: hello"}]
    assert request.max_tokens == 50
    sampling, elicitation = handler.exchanges
    assert (sampling.kind, sampling.answered_by, sampling.in_flight) == ("sampling", "Fake", 1)
    assert sampling.request["maxTokens"] == 50 and sampling.error_reason is None
    assert sampling.response == {
        "role": "assistant",
        "content": {"type": "text", "text": "hello, summarised"},
        "model": "fake/model",
    }
    assert elicitation.kind == "elicitation"
    assert elicitation.request["requestedSchema"]["properties"] == {"ok": {"type": "boolean"}}
    assert elicitation.response == {"action": "accept", "content": {"ok": True}}
    initialize = next(e["recv"] for e in read_raw_log(tmp_path / "raw.log") if "recv" in e)
    assert {"sampling", "elicitation"} <= set(initialize["params"]["capabilities"])


async def test_outside_a_trajectory_sampling_is_refused_at_once_and_elicitation_declined():
    spec = quirk_spec("sampling_elicitation.json")
    async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
        # the server waits 30 s for our answer: a timeout below that proves we answered
        sampled = await session.call_tool("summarise_with_llm", {}, timeout=20)
        elicited = await session.call_tool("confirm_delete", {}, timeout=20)
    assert "sampling_unavailable" in sampled.text and '"error"' in sampled.text
    assert '"action": "decline"' in elicited.text


async def test_a_failing_handler_answers_the_server_with_an_error_instead_of_hanging():
    handler = ScriptedHandler(fail=True)
    spec = quirk_spec("sampling_elicitation.json")
    async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
        sampled = await session.call_tool("summarise_with_llm", {}, timeout=20, handler=handler)
    assert "client_error" in sampled.text
    [exchange] = handler.exchanges
    assert exchange.error_reason == "client_error" and exchange.response is None


def test_elicitation_policies_without_a_model():
    form = ElicitationRequest(
        message="Pick",
        requested_schema={
            "type": "object",
            "properties": {"n": {"type": "integer", "default": 3}, "why": {"type": "string"}},
        },
    )
    accepted = answer_by_policy("accept_defaults", form)
    assert (accepted.action, accepted.content) == ("accept", {"n": 3})
    strict = form.model_copy(
        update={"requested_schema": {**form.requested_schema, "required": ["why"]}}
    )
    refused = answer_by_policy("accept_defaults", strict)
    assert (refused.action, refused.error_reason) == ("decline", "no_default_for_required")
    assert answer_by_policy("decline", form).action == "decline"
    url = ElicitationRequest(mode="url", message="Log in", url="https://example.com/login")
    assert answer_by_policy("accept_defaults", url).error_reason == "url_elicitation_unsupported"
    assert answer_by_policy("simulated_user", form).error_reason == "no_simulated_user"


async def test_progress_restarts_the_idle_timeout_and_the_token_is_sent(tmp_path):
    log = tmp_path / "raw.log"
    spec = quirk_spec("progress_short.json", log=log)
    async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
        result = await session.call_tool(
            "long_job", {}, timeout=IDLE_TIMEOUT_S, timeout_max=IDLE_TIMEOUT_S * 10
        )
    assert not result.is_error and result.text.startswith("long_job ok")
    tokens = [
        e["progress_token_from_client"]
        for e in read_raw_log(log)
        if len(e) == 1 and "progress_token_from_client" in e
    ]
    assert tokens and tokens[0] is not None


async def test_a_call_without_progress_still_times_out_at_the_idle_timeout():
    spec = quirk_spec("progress_short.json")
    async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
        with pytest.raises(ToolTimeout) as caught:
            await session.call_tool(
                "silent_job", {}, timeout=IDLE_TIMEOUT_S, timeout_max=IDLE_TIMEOUT_S * 10
            )
    assert caught.value.reason == "tool_timeout"


async def test_progress_never_outlasts_the_hard_cap():
    spec = quirk_spec("progress_short.json")
    async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S) as session:
        with pytest.raises(ToolTimeout) as caught:
            await session.call_tool("long_job", {}, timeout=IDLE_TIMEOUT_S, timeout_max=2.0)
    assert caught.value.reason == "tool_timeout"


async def test_list_changed_makes_the_pool_list_the_tools_again():
    mcp = McpConfig(connect_timeout_s=CONNECT_TIMEOUT_S)
    async with make_pool(mcp) as pool:
        server_id = pool.register(quirk_spec("list_changed.json"))
        before = {tool.name: tool.schema_hash for tool in await pool.list_tools(server_id)}
        assert pool.tools_generation(server_id) == 0
        await pool.call_tool(server_id, "login", {})
        assert pool.tools_generation(server_id) == 1  # read before the call returned
        after = {tool.name: tool.schema_hash for tool in await pool.list_tools(server_id)}
    assert set(before) == {"login", "old_tool"} and set(after) == {"login", "new_tool"}
    assert before["login"] != after["login"]


async def test_the_pools_fallback_answers_elicitation_by_the_configured_policy():
    mcp = McpConfig(connect_timeout_s=CONNECT_TIMEOUT_S, elicitation={"policy": "accept_defaults"})
    async with make_pool(mcp) as pool:
        assert isinstance(pool.server_requests, PolicyHandler)
        server_id = pool.register(quirk_spec("sampling_elicitation.json"))
        with anyio.fail_after(25):
            elicited = await pool.call_tool(server_id, "confirm_delete", {})
    assert '"action": "accept"' in elicited.text


def test_a_sampling_request_becomes_chat_messages_with_markers_for_non_text_blocks():
    params = types.CreateMessageRequestParams.model_validate(
        {
            "systemPrompt": "Be brief.",
            "messages": [
                {"role": "user", "content": {"type": "text", "text": "What is this?"}},
                {
                    "role": "user",
                    "content": [{"type": "image", "data": "aGk=", "mimeType": "image/png"}],
                },
                {"role": "assistant", "content": {"type": "text", "text": "A picture."}},
            ],
            "maxTokens": 20,
            "temperature": 0.2,
            "stopSequences": ["\n\n"],
            "modelPreferences": {"hints": [{"name": "opus"}, {}]},
        }
    )
    request = to_sampling_request(params)
    assert [m["role"] for m in request.messages] == ["system", "user", "user", "assistant"]
    assert request.messages[0]["content"] == "Be brief."
    assert request.messages[2]["content"].startswith("[image: image/png")
    assert (request.max_tokens, request.temperature, request.stop) == (20, 0.2, ["\n\n"])
    assert request.model_hints == ["opus"]


async def test_a_health_check_probe_that_samples_gets_a_refusal_not_a_hang():
    spec = quirk_spec("sampling_elicitation.json").model_copy(
        update={"probe": {"tool": "summarise_with_llm", "arguments": {}}}
    )
    async with make_pool(McpConfig(connect_timeout_s=CONNECT_TIMEOUT_S)) as pool:
        # the server gives up on us after 30 s; the probe's own timeout is below that
        check = await check_server(spec, pool, probe_timeout=20)
    assert check.status == "ok" and check.probe_tool == "summarise_with_llm"
    assert "sampling_unavailable" in (check.probe_result or "")
