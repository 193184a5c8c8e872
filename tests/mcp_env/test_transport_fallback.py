"""Transport negotiation against real servers: streamable HTTP <-> SSE fallback, bare URLs,
and failures that name their real cause."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mcp_env.health import check_server
from mcp_env.pool import SessionPool
from mcp_env.session import open_session
from mcp_env.specs import parse_server_spec
from tests.mcp_env.conftest import CONNECT_TIMEOUT_S, served_spec
from toucan.errors import ServerStartError

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("speaks", "path", "declared", "notes"),
    [
        ("sse", "/sse", "streamable-http", ["wrong_transport"]),
        ("streamable-http", "/mcp", "sse", ["wrong_transport"]),
        ("sse", "/sse", None, []),
        ("streamable-http", "/mcp", None, []),
    ],
)
async def test_the_other_transport_is_tried_and_the_one_that_worked_recorded(
    speaks, path, declared, notes
):
    spec = parse_server_spec(served_spec(speaks, path, declared))
    async with SessionPool(connect_timeout=CONNECT_TIMEOUT_S) as pool:
        verdict = await check_server(spec, pool)
        result = await pool.call_tool(spec.server_id, "add", {"a": 2, "b": 40})
    assert (result.text, result.is_error) == ("42", False)
    assert (verdict.status, verdict.transport_used, verdict.notes) == ("ok", speaks, notes)
    if notes:
        assert f"declared {declared}, speaks {speaks}" in verdict.detail


async def test_a_url_where_neither_transport_answers_says_so():
    spec = parse_server_spec(served_spec("sse", "/nowhere", None))
    with pytest.raises(ServerStartError) as caught:
        async with open_session(spec, connect_timeout=CONNECT_TIMEOUT_S):
            pass
    assert caught.value.reason == "no_mcp_endpoint"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_nothing_listening_is_connection_refused_without_a_fallback():
    spec = parse_server_spec({"name": "nobody", "url": f"http://127.0.0.1:{free_port()}/mcp"})
    with pytest.raises(ServerStartError) as caught:
        async with open_session(spec, connect_timeout=5):
            pass
    assert caught.value.reason == "connection_refused"
    assert "then" not in str(caught.value)  # no second transport tried


class Refusing(BaseHTTPRequestHandler):
    """Answers every request with 401, as a server wanting a key does."""

    def refuse(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Bearer realm="mcp"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = refuse

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def refusing_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("declared", [None, "sse"])
async def test_a_server_wanting_credentials_is_auth_failed(refusing_url, declared):
    entry = {"name": "locked", "url": refusing_url}
    if declared:
        entry["transport"] = declared
    with pytest.raises(ServerStartError) as caught:
        async with open_session(parse_server_spec(entry), connect_timeout=5):
            pass
    assert caught.value.reason == "auth_failed"
