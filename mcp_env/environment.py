"""Build the MCP environment (session pool) from settings: the one place that knows where the
fleet, its seed data and the sandboxes live."""

from __future__ import annotations

from pathlib import Path

from mcp_env.limits import DEFAULT_LIMITS
from mcp_env.pool import SessionPool
from mcp_env.server_requests import PolicyHandler
from toucan.config import LimitsConfig, McpConfig


def fleet_paths(mcp: McpConfig) -> tuple[Path, Path]:
    """(fleet dir, seed dir), absolute, so server launch lines work from any cwd."""
    fleet_dir = Path(mcp.fleet_dir).resolve()
    return fleet_dir, fleet_dir / "seed"


def make_pool(
    mcp: McpConfig,
    *,
    max_concurrency: int | None = None,
    limits: LimitsConfig = DEFAULT_LIMITS,
) -> SessionPool:
    """A session pool configured by the `mcp` settings section (and `limits`, the caps on the
    tools its servers list); use it as `async with`. Outside a trajectory its sessions refuse
    sampling and answer elicitation by the configured policy without a model
    (`PolicyHandler`)."""
    fleet_dir, seed_dir = fleet_paths(mcp)
    return SessionPool(
        sandbox_root=Path(mcp.sandbox_root) if mcp.sandbox_root else None,
        seed_dir=seed_dir,
        fleet_dir=fleet_dir,
        max_concurrency=max_concurrency or mcp.per_server_concurrency,
        max_restarts=mcp.max_restarts,
        connect_timeout=mcp.connect_timeout_s,
        call_timeout=mcp.call_timeout_s,
        call_timeout_max=mcp.call_timeout_max_s,
        max_result_chars=mcp.max_result_chars,
        server_requests=PolicyHandler(mcp.elicitation.policy),
        limits=limits,
    )
