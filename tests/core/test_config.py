from __future__ import annotations

from pathlib import Path

import pytest

from toucan.config import DOMAIN_CATEGORIES, load_settings
from toucan.errors import ConfigError

KEY_VARS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "MOONSHOT_API_KEY",
    "TOGETHERAI_API_KEY",
    "COHERE_API_KEY",
    "MISTRAL_API_KEY",
    "TOUCAN_PROFILE",
)


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


def test_defaults_declare_five_generators_three_teachers_and_a_judge() -> None:
    s = load_settings()
    assert [d.name for d in s.models.generators] == [
        "Llama-3-70B-Instruct",
        "Qwen2-72B-Instruct",
        "Command-R+",
        "Gemma-2-27B-IT",
        "Mistral-Large",
    ]
    assert [d.name for d in s.models.teachers] == [
        "GPT-4.5-Turbo",
        "Claude-3-Opus",
        "Kimi-K2-Turbo",
    ]
    assert [d.name for d in s.models.judge] == ["GPT-4o-mini"]
    assert len(DOMAIN_CATEGORIES) == 26 and s.categories == list(DOMAIN_CATEGORIES)


def test_profile_is_local_without_keys_and_cloud_with_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().profile == "local"
    assert load_settings().models.route_to_local is True
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    s = load_settings()
    assert s.profile == "cloud" and s.models.route_to_local is False


def test_yaml_file_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        "mcp: {call_timeout_s: 7}\nmodels:\n  judge:\n    - {name: J, model: openai/x}\n"
    )
    s = load_settings(cfg)
    assert s.mcp.call_timeout_s == 7 and s.models.judge[0].name == "J"
    monkeypatch.setenv("TOUCAN_MCP__CALL_TIMEOUT_S", "3")
    assert load_settings(cfg).mcp.call_timeout_s == 3


def test_a_typo_in_the_yaml_fails_at_load(tmp_path: Path) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text("mcp: {call_timeout: 7}\n")
    with pytest.raises(ConfigError):
        load_settings(cfg)


def test_a_drop_flag_that_names_no_trajectory_rule_fails_at_load(tmp_path: Path) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text("filter_trajectories: {drop_flags: [no_tool_call, repeated_junks]}\n")
    with pytest.raises(ConfigError):
        load_settings(cfg, profile="cloud")  # the `local` profile sets its own drop_flags
    cfg.write_text("filter_trajectories: {drop_flags: [no_tool_call, repeated_junk]}\n")
    chosen = load_settings(cfg, profile="cloud").filter_trajectories.drop_flags
    assert chosen == ["no_tool_call", "repeated_junk"]


def test_unknown_profile_and_broken_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(profile="nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcp: [unclosed\n")
    with pytest.raises(ConfigError):
        load_settings(bad)
