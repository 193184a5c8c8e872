from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from toucan.config import DOMAIN_CATEGORIES, load_settings, load_settings_with_sources
from toucan.errors import ConfigError
from toucan.settings_layers import source_of

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


# -- layers: default < profile < user file < environment < flags --------------------------


def user_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user.yaml"
    path.write_text(text)
    return path


def test_a_value_no_layer_sets_comes_from_the_defaults() -> None:
    settings, sources = load_settings_with_sources(profile="cloud")
    assert settings.mcp.call_timeout_s == 60 and sources["mcp.call_timeout_s"] == "default"
    assert settings.max_in_flight == 256  # a field default: no layer names it
    assert source_of("max_in_flight", sources) == "default"


def test_the_profile_overrides_the_defaults() -> None:
    settings, sources = load_settings_with_sources(profile="local")
    assert settings.synthesize.concurrency == 1  # defaults say 64
    assert sources["synthesize.concurrency"] == "profile local"
    assert sources["profile"] == "flag --profile"


def test_the_users_file_wins_over_the_profile(tmp_path: Path) -> None:
    config = user_file(tmp_path, "trajectories: {concurrency: 16}\n")
    settings, sources = load_settings_with_sources(config, profile="local")
    assert settings.trajectories.concurrency == 16  # the local profile says 1
    assert sources["trajectories.concurrency"] == f"file {config}"
    # the rest of the profile's section stays: mappings merge key by key
    assert settings.trajectories.max_turns == 3
    assert sources["trajectories.max_turns"] == "profile local"


def test_the_environment_wins_over_the_users_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = user_file(tmp_path, "trajectories: {concurrency: 16}\n")
    monkeypatch.setenv("TOUCAN_TRAJECTORIES__CONCURRENCY", "8")
    settings, sources = load_settings_with_sources(config, profile="local")
    assert settings.trajectories.concurrency == 8
    assert sources["trajectories.concurrency"] == "env TOUCAN_TRAJECTORIES__CONCURRENCY"


def test_flags_win_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = user_file(tmp_path, "trajectories: {concurrency: 16}\nstore: from-file.duckdb\n")
    monkeypatch.setenv("TOUCAN_TRAJECTORIES__CONCURRENCY", "8")
    monkeypatch.setenv("TOUCAN_STORE", "from-env.duckdb")
    flags = {"trajectories": {"concurrency": 4}, "store": "from-flag.duckdb"}
    settings, sources = load_settings_with_sources(config, profile="local", overrides=flags)
    assert (settings.trajectories.concurrency, settings.store) == (4, "from-flag.duckdb")
    assert sources["trajectories.concurrency"] == sources["store"] == "flag"


def test_the_profile_is_named_by_the_same_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = user_file(tmp_path, "profile: cloud\n")
    assert load_settings_with_sources(config)[1]["profile"] == f"file {config}"
    assert load_settings(config).profile == "cloud"
    monkeypatch.setenv("TOUCAN_PROFILE", "local")
    assert load_settings(config).profile == "local"
    assert load_settings(config, profile="cloud").profile == "cloud"
    monkeypatch.delenv("TOUCAN_PROFILE")
    assert load_settings_with_sources()[1]["profile"] == "default, auto"


def test_an_unknown_key_is_one_line_naming_it(tmp_path: Path) -> None:
    config = user_file(tmp_path, "mcp: {call_timeout: 7}\ntrajectories: {concurency: 2}\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    message = str(refused.value)
    assert "\n" not in message and refused.value.reason == "bad_config"
    assert "mcp.call_timeout" in message and "trajectories.concurency" in message


def test_config_sources_prints_each_value_with_the_layer_that_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = user_file(tmp_path, "trajectories: {concurrency: 16}\n")
    monkeypatch.setenv("TOUCAN_MCP__CALL_TIMEOUT_S", "9")
    shown = CliRunner().invoke(
        app, ["config", "--config", str(config), "--profile", "local", "--sources"]
    )
    assert shown.exit_code == 0, shown.output
    lines = {line.split(" = ")[0]: line for line in shown.stdout.splitlines()}
    assert lines["trajectories.concurrency"].endswith(f"# file {config}")
    assert lines["trajectories.concurrency"].startswith("trajectories.concurrency = 16 ")
    assert lines["mcp.call_timeout_s"].endswith("# env TOUCAN_MCP__CALL_TIMEOUT_S")
    assert lines["synthesize.concurrency"].endswith("# profile local")
    assert lines["models.judge[0].name"].endswith("# default")


def test_misshapen_settings_in_a_file_or_the_environment_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for text in ("models: [1, 2]\n", "models: {generators: [3]}\n", "- a\n- b\n"):
        with pytest.raises(ConfigError):
            load_settings(user_file(tmp_path, text))
    monkeypatch.setenv("TOUCAN_MCP", "{not json")
    with pytest.raises(ConfigError):
        load_settings()
