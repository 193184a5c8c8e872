"""A server that answers a call with junk fails that call as `junk_reply`, not `tool_timeout`:
at once when the junk names the call's id, at the timeout otherwise; the session stays usable
(tests/servers/quirks/broken_answers.json)."""

from __future__ import annotations

import anyio
import pytest

from mcp_env.session import open_session
from mcp_env.transport import junk_reply_id
from tests.mcp_env.conftest import CONNECT_TIMEOUT_S, quirk_spec
from toucan.errors import JunkReply, ToolTimeout

pytestmark = pytest.mark.anyio

# long enough that a junk reply waiting it out would trip the `fail_after` bound below
PATIENT_TIMEOUT_S = 60.0
SHORT_TIMEOUT_S = 1.5


@pytest.mark.parametrize("tool", ["junk_shaped", "junk_cut"])
async def test_a_junk_reply_naming_the_call_fails_it_at_once(tool: str) -> None:
    async with open_session(
        quirk_spec("broken_answers"), connect_timeout=CONNECT_TIMEOUT_S
    ) as session:
        with anyio.fail_after(PATIENT_TIMEOUT_S / 2), pytest.raises(JunkReply) as caught:
            await session.call_tool(tool, {"text": "hi"}, timeout=PATIENT_TIMEOUT_S)
        assert caught.value.reason == "junk_reply"
        good = await session.call_tool("echo", {"text": "still here"}, timeout=PATIENT_TIMEOUT_S)
        assert not good.is_error and "still here" in good.text


async def test_junk_text_instead_of_an_answer_is_junk_at_the_timeout_and_silence_is_a_timeout():
    async with open_session(
        quirk_spec("broken_answers"), connect_timeout=CONNECT_TIMEOUT_S
    ) as session:
        with pytest.raises(JunkReply) as junk:
            await session.call_tool("junk_text", {}, timeout=SHORT_TIMEOUT_S)
        assert "junk line" in str(junk.value)
        with pytest.raises(ToolTimeout) as silent:
            await session.call_tool("stall", {}, timeout=SHORT_TIMEOUT_S)
        assert silent.value.reason == "tool_timeout"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"jsonrpc": "2.0", "id": 7, "result": "done"}', 7),
        ('{"jsonrpc": "2.0", "id": "a-1"}', "a-1"),
        ('{"jsonrpc":"2.0","id":12,"result":{"content":[{"ty', 12),
        ('{"id": 3, "res', 3),
        ("<html>502 Bad Gateway</html>", None),
        ('Starting server {"id": 3}', None),
        ('{"jsonrpc": "2.0", "method": "ping", "id": 4, "params": 1}', None),  # a request
        ('{"jsonrpc": "2.0", "result": {"item": {"id": 5', None),  # an id, but not the reply's
        ('{"jsonrpc": "2.0", "id": true}', None),
        ("[1, 2]", None),
    ],
)
def test_only_a_line_that_names_a_reply_id_is_taken_for_that_reply(line, expected) -> None:
    assert junk_reply_id(line) == expected
