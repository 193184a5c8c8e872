"""A call whose tool schema cannot be checked (a `$ref` to nothing) still reaches the server.
(Every quirk fixture's trajectory, through onboarding and the store: tests/quirks.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mcp_env.pool import SessionPool
from tasks.agent import Toolbox
from tasks.agent.naming import ExposedTool
from tests.mcp_env.conftest import quirk_spec


def test_a_call_whose_arguments_cannot_be_checked_still_goes_to_the_server() -> None:
    """A schema from an older store or another source, with its `$ref` still broken."""
    spec = quirk_spec("broken_ref")
    schema = {"type": "object", "properties": {"item": {"$ref": "#/$defs/Item"}}}
    exposed = ExposedTool(
        name="add_item",
        server_id=spec.server_id,
        server=spec.name,
        tool="add_item",
        description="Add an item to the cart.",
        input_schema=schema,
        schema_hash="h",
    )

    async def call() -> tuple[str, Any]:
        async with SessionPool(connect_timeout=60) as pool:
            pool.register(spec)
            toolbox = Toolbox("traj_1", [exposed], pool, token_budget=500, call_timeout=30)
            text = await toolbox.call("c1", "add_item", json.dumps({"item": 5}))
            return text, toolbox.log[0]

    text, entry = asyncio.run(call())
    assert text == 'add_item ok: {"item": 5}'
    assert (entry.is_error, entry.schema_violation, entry.notes) == (
        False,
        None,
        ["arguments_unchecked"],
    )
