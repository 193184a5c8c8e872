"""toucan.prompts: templates with role blocks become chat messages with stable hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from toucan.errors import ConfigError
from toucan.prompts import render, template_hash


def write(root: Path, name: str, text: str) -> None:
    path = root / f"{name}.j2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_role_blocks_become_system_then_user_messages(tmp_path: Path) -> None:
    write(
        tmp_path,
        "demo/step",
        "{% block user %}Hi {{ who }}{% endblock %}{% block system %}Be brief.{% endblock %}",
    )
    prompt = render("demo/step", {"who": "Ada"}, root=tmp_path)
    assert prompt.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi Ada"},
    ]
    assert prompt.name == "demo/step"


def test_a_template_without_blocks_is_one_user_message(tmp_path: Path) -> None:
    write(tmp_path, "demo/plain", "Count to {{ n }}.")
    assert render("demo/plain", root=tmp_path, n=3).messages == [
        {"role": "user", "content": "Count to 3."}
    ]


def test_a_missing_variable_raises_instead_of_rendering_empty(tmp_path: Path) -> None:
    write(tmp_path, "demo/step", "{% block user %}Hi {{ who }}{% endblock %}")
    with pytest.raises(ConfigError) as caught:
        render("demo/step", root=tmp_path)
    assert caught.value.reason == "prompt_variable_missing"


def test_a_missing_template_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        render("demo/nothing", root=tmp_path)
    assert caught.value.reason == "prompt_missing"


def test_template_hash_follows_the_source_and_prompt_hash_the_rendering(tmp_path: Path) -> None:
    write(tmp_path, "demo/a", "Hello {{ x }}")
    first = render("demo/a", root=tmp_path, x=1)
    assert render("demo/a", root=tmp_path, x=2).template_hash == first.template_hash
    assert render("demo/a", root=tmp_path, x=2).prompt_hash != first.prompt_hash
    write(tmp_path, "demo/b", "Hello there {{ x }}")
    assert template_hash("demo/b", tmp_path) != first.template_hash


@pytest.mark.parametrize(
    "name", ["synthesize/single_server", "synthesize/multi_server", "synthesize/featured"]
)
def test_the_shipped_synthesis_templates_render(name: str) -> None:
    server = {
        "name": "Calc",
        "description": "math",
        "domain": None,
        "tools": [{"name": "add", "description": "adds"}],
    }
    prompt = render(name, servers=[server, server], server=server, num_tools=2)
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    assert "add: adds" in prompt.messages[1]["content"]


def test_the_shipped_judge_template_renders() -> None:
    server = {"name": "Calc", "tools": [{"name": "add", "description": "adds"}]}
    prompt = render(
        "filter_tasks/judge",
        servers=[server],
        question="What is 2+2?",
        target_tools=[{"server": "Calc", "tool": "add"}],
    )
    user = prompt.messages[1]["content"]
    assert "What is 2+2?" in user
    assert "Server: Calc -> Tool: add" in user
