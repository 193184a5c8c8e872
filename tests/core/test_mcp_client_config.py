"""The MCP client's settings: sampling, elicitation and the progress-extended call timeout."""

from __future__ import annotations

import pytest

from toucan.config import load_settings
from toucan.errors import ConfigError


def test_defaults_answer_sampling_with_the_teacher_and_elicitation_with_a_simulated_user():
    mcp = load_settings(profile="local").mcp
    assert mcp.sampling.model_group is None
    assert (mcp.elicitation.policy, mcp.elicitation.model_group) == ("simulated_user", "generator")
    assert mcp.call_timeout_max_s >= mcp.call_timeout_s


@pytest.mark.parametrize(
    "mcp",
    [
        {"sampling": {"model_group": "no-such-model"}},
        {"elicitation": {"model_group": "teachers"}},
        {"elicitation": {"policy": "ask_a_human"}},
        {"sampling": {"modelgroup": "judge"}},
        {"call_timeout_s": 60, "call_timeout_max_s": 30},
    ],
)
def test_bad_mcp_client_settings_fail_at_load(mcp: dict) -> None:
    with pytest.raises(ConfigError):
        load_settings(profile="local", overrides={"mcp": mcp})


def test_a_group_or_a_deployment_may_answer_sampling() -> None:
    judged = load_settings(
        profile="local", overrides={"mcp": {"sampling": {"model_group": "judge"}}}
    )
    named = load_settings(
        profile="local", overrides={"mcp": {"sampling": {"model_group": "Claude-3-Opus"}}}
    )
    assert judged.mcp.sampling.model_group == "judge"
    assert named.mcp.sampling.model_group == "Claude-3-Opus"
