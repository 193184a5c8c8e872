"""Pure parts of the export: the secret detector and scrubber, chat formats, mix planning,
call checks."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tasks.chat_formats import to_openai_chat, to_sharegpt_hermes
from tasks.export import ExportRejected, check_tool_calls, plan_mix
from tasks.scrub import Scrubber, environment_secrets, find_secrets
from tasks.secrets import SecretDetector, load_rules
from tests.export.seeding import (
    FORECAST_SCHEMA,
    LEAKS,
    ORDINARY_TOOL_OUTPUT,
    WEATHER_TOOLS,
    call,
    tool_use_messages,
)
from toucan.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("key sk-ant-api03-abcdefghijklmnop", "openai_key"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123", "github_token"),
        ("AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
        ("xoxp-1234567890-abcdef", "slack_token"),
        ("Authorization: Bearer abc.def.ghijklmnopqrst", "bearer_token"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----",
            "private_key",
        ),
        ("write to jane.doe@corp.example.org", "email"),
        ("saved /home/bob/work/a.txt", "local_path"),
        ("password: hunter2hunter2hunter2", "generic_secret"),
    ],
)
def test_each_secret_kind_is_replaced_and_counted(text, pattern):
    scrubber = Scrubber()
    cleaned = scrubber.scrub_text(text)
    assert scrubber.counts[pattern] == 1
    assert find_secrets(cleaned) == []
    assert Scrubber().scrub_text(cleaned) == cleaned  # idempotent


@pytest.mark.parametrize("leak", LEAKS, ids=lambda leak: f"{leak.kind}:{leak.text[:24]}")
def test_every_seeded_leak_is_one_finding_of_its_kind_and_leaves_nothing(leak):
    scrubber = Scrubber()
    cleaned = scrubber.scrub_text(leak.text)
    assert dict(scrubber.counts) == {leak.kind: 1}
    assert not [needle for needle in leak.needles if needle in cleaned]
    assert find_secrets(cleaned) == []
    assert Scrubber().scrub_text(cleaned) == cleaned


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/tmp/sbx-9/data/a.txt", "/workspace/data/a.txt"),
        ("/root/notes.md", "/workspace/notes.md"),
        ("/home/alice", "/workspace"),
        ("see /Users/bob/Desktop/x.png", "see /workspace/Desktop/x.png"),
        ("/var/lib/postgresql/16/main", "/workspace/postgresql/16/main"),
        ("/srv/x", "/workspace/x"),
        ('{"out": "/mnt/disk2/run/out.csv"}', '{"out": "/workspace/run/out.csv"}'),
        ("--data=/data/a.parquet", "--data=/workspace/a.parquet"),
        ("D:\\projects\\acme\\main.py", "D:\\workspace\\main.py"),
        ("C:\\Users\\bob", "C:\\workspace"),
        ('"C:\\\\Users\\\\bob\\\\a.txt"', '"C:\\\\workspace\\\\a.txt"'),
        ("\\\\nas01\\media\\film.mkv", "\\\\workspace\\film.mkv"),
        ("cat ~/.aws/credentials", "cat /workspace/.aws/credentials"),
        ("[resource file:///home/alice/a.txt]", "[resource file:///workspace/a.txt]"),
    ],
)
def test_local_paths_lose_their_private_prefix_and_keep_their_tail(text, expected):
    scrubber = Scrubber()
    assert scrubber.scrub_text(text) == expected
    assert dict(scrubber.counts) == {"local_path": 1}


@pytest.mark.parametrize("text", ORDINARY_TOOL_OUTPUT)
def test_ordinary_tool_output_is_not_redacted(text):
    scrubber = Scrubber()
    assert scrubber.scrub_text(text) == text
    assert not scrubber.counts


def test_scrubbed_tool_arguments_keep_their_shape_and_still_validate():
    schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "pattern": "^/"},
            "win": {"type": "string", "pattern": "^[A-Za-z]:\\\\"},
            "email": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+\\.[a-z]+$"},
            "url": {"type": "string", "pattern": "^https://[^\\s]+$"},
        },
    }
    arguments = {
        "path": "/home/alice/reports/q3.csv",
        "win": "C:\\Users\\alice\\q3.xlsx",
        "email": "alice.smith@corp.example.org",
        "url": "https://alice:Hunter2pw@db.example.com/q3",
    }
    scrubber = Scrubber()
    scrubbed = json.loads(scrubber.scrub_text(json.dumps(arguments)))
    jsonschema.validate(scrubbed, schema)
    assert "alice" not in json.dumps({k: v for k, v in scrubbed.items() if k != "url"})
    assert scrubbed["url"] == "https://alice:REDACTED@db.example.com/q3"
    assert dict(scrubber.counts) == {"local_path": 2, "email": 1, "basic_auth": 1}


@pytest.mark.parametrize(
    "entry",
    [
        '[[rules]]\nkind = "x"\nregex = "("\nreplacement = "r"',
        '[[rules]]\nkind = "x"\nplugin = "nope.Missing"\nreplacement = "r"',
        '[[rules]]\nkind = "x"\nregex = "a"\nreplacement = "r"\ntypo = 1',
        "[[rules]\nkind =",
        '[[rules]]\nkind = "x"\nreplacement = "r"',
        '[[rules]]\nkind = "x"\nregex = "a"\nreplacement = "r"\nkeywords = ["Key"]',
    ],
)
def test_a_broken_rules_file_is_a_config_error(entry, tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(entry, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        SecretDetector(load_rules(path))
    assert caught.value.reason == "bad_secret_rules"


def test_openai_format_masks_everything_but_assistant_turns():
    messages = tool_use_messages("q", {"city": "Paris"}, "sunny")
    chat = to_openai_chat(messages, WEATHER_TOOLS)
    assert chat["loss_mask"] == [False, False, True, False, True]
    assert chat["messages"][3]["tool_call_id"] == "c1"


def test_hermes_format_writes_tool_call_and_tool_response_tags():
    chat = to_sharegpt_hermes(tool_use_messages("q", {"city": "Paris"}, "sunny"), WEATHER_TOOLS)
    values = [t["value"] for t in chat["conversations"]]
    assert '"name": "weather-get_forecast"' in values[2] and "<tool_call>" in values[2]
    assert values[3] == "<tool_response>\nsunny\n</tool_response>"
    assert chat["loss_mask"] == [False, False, True, False, True]


def test_tool_calls_outside_the_schema_or_toolset_are_rejected_with_a_reason():
    def reason_for(arguments_or_name):
        name, arguments = arguments_or_name
        messages = [{"role": "assistant", "tool_calls": [call("c", name, arguments)]}]
        with pytest.raises(ExportRejected) as caught:
            check_tool_calls(messages, WEATHER_TOOLS)
        return caught.value.reason

    assert reason_for(("weather-get_forecast", {"days": 2})) == "invalid_tool_arguments"
    assert reason_for(("weather-nope", {"city": "x"})) == "unknown_tool"
    broken = [
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "weather-get_forecast", "arguments": "{"}}],
        }
    ]
    with pytest.raises(ExportRejected) as caught:
        check_tool_calls(broken, WEATHER_TOOLS)
    assert caught.value.reason == "unparseable_tool_arguments"
    check_tool_calls(
        [
            {
                "role": "assistant",
                "tool_calls": [call("c", "weather-get_forecast", {"city": "x", "days": 2})],
            }
        ],
        WEATHER_TOOLS,
    )
    assert FORECAST_SCHEMA["required"] == ["city"]


def test_mix_plan_takes_the_scarcest_subset_whole_and_skips_missing_ones():
    weights = {"a": 28.3, "b": 40.0, "c": 15.8, "d": 35.2}
    assert plan_mix({"a": 1000, "b": 400, "c": 1000, "d": 1000}, weights) == {
        "a": 283,
        "b": 400,
        "c": 158,
        "d": 352,
    }
    assert plan_mix({"a": 10, "b": 0, "c": 0, "d": 0}, weights) == {"a": 10, "b": 0, "c": 0, "d": 0}
    assert plan_mix({}, weights) == {}


def test_secret_environment_values_are_found_verbatim_whatever_their_format(monkeypatch):
    monkeypatch.setenv("ACME_SERVICE_TOKEN", "plain words 42")
    monkeypatch.setenv("ACME_REGION", "eu-west-1 plain")
    secrets = environment_secrets()
    assert "plain words 42" in secrets and "eu-west-1 plain" not in secrets
    detector = SecretDetector(load_rules(), literals={"environment_secret": secrets})
    scrubber = Scrubber(detector=detector)
    assert scrubber.scrub_text("got plain words 42 back") == "got [REDACTED_SECRET] back"
    assert dict(scrubber.counts) == {"environment_secret": 1}
    with pytest.raises(ConfigError) as caught:
        SecretDetector(load_rules(), literals={"passwords": ["x"]})
    assert caught.value.reason == "bad_secret_rules"
