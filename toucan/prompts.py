"""Prompt templates: `prompts/<stage>/<step>.j2` files rendered with Jinja2 into chat messages.

Convention (one file per LLM step): the template defines Jinja blocks named after chat roles,

    {% block system %}You are ...{% endblock %}
    {% block user %}Server: {{ server.name }} ...{% endblock %}

and each non-empty block becomes one message, in the order system, user, assistant. A template
with no role blocks is a single user message. Variables are strict: a missing one raises
`ConfigError(reason="prompt_variable_missing")` instead of rendering an empty string.

Every output row stores the template hash (the file's source) and, for the cache, the hash of
the rendered messages.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict

from toucan.errors import ConfigError
from toucan.ids import content_hash

ROLES = ("system", "user", "assistant")
TEMPLATE_SUFFIX = ".j2"


class RenderedPrompt(BaseModel):
    """Chat messages ready for the model, plus what they were made from."""

    model_config = ConfigDict(frozen=True)

    name: str  # "<stage>/<step>"
    messages: list[dict[str, str]]
    template_hash: str  # hash of the template source: stored on every row it produced
    prompt_hash: str  # hash of the rendered messages


@functools.cache
def prompts_dir() -> Path:
    """The `prompts/` package directory (works from a checkout and from an installed wheel)."""
    return Path(str(resources.files("prompts")))


@functools.cache
def _environment(root: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _template_path(name: str) -> str:
    return name if name.endswith(TEMPLATE_SUFFIX) else name + TEMPLATE_SUFFIX


def load_template(name: str, root: Path | None = None) -> jinja2.Template:
    """The compiled template `prompts/<name>.j2`; raises ConfigError when it does not exist."""
    environment = _environment(str(root or prompts_dir()))
    try:
        return environment.get_template(_template_path(name))
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"no prompt template {name!r}", reason="prompt_missing") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(
            f"prompt {name!r} does not parse: {exc}", reason="prompt_invalid"
        ) from exc


@functools.cache
def _source_hash(path: str, mtime_ns: int) -> str:
    return content_hash(Path(path).read_text(encoding="utf-8"), 16)


def template_hash(name: str, root: Path | None = None) -> str:
    """Hash of the template's source text: changes whenever its words change."""
    template = load_template(name, root)
    assert template.filename is not None
    return _source_hash(template.filename, Path(template.filename).stat().st_mtime_ns)


def render_messages(
    name: str, variables: dict[str, Any], root: Path | None = None
) -> list[dict[str, str]]:
    template = load_template(name, root)
    try:
        context = template.new_context(dict(variables))
        role_blocks = [role for role in ROLES if role in template.blocks]
        if not role_blocks:
            return [{"role": "user", "content": template.render(**variables).strip()}]
        messages = []
        for role in role_blocks:
            text = "".join(template.blocks[role](context)).strip()
            if text:
                messages.append({"role": role, "content": text})
        return messages
    except jinja2.UndefinedError as exc:
        raise ConfigError(
            f"prompt {name!r} needs a variable that was not given: {exc}",
            reason="prompt_variable_missing",
        ) from exc


def render(
    name: str, variables: dict[str, Any] | None = None, *, root: Path | None = None, **more: Any
) -> RenderedPrompt:
    """Render `prompts/<name>.j2` (e.g. "filter_tasks/judge") into chat messages and hashes.

    Variables come from the `variables` mapping and/or keyword arguments.
    """
    messages = render_messages(name, {**(variables or {}), **more}, root)
    return RenderedPrompt(
        name=name,
        messages=messages,
        template_hash=template_hash(name, root),
        prompt_hash=content_hash(messages, 16),
    )
