"""The embedded model (profile `local`): real llama-cpp server, real SmolLM2 weights, on CPU."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from tests.fake_llm import models_config_for
from toucan.config import LocalModelConfig
from toucan.llm.replies import CallMeta

pytestmark = [pytest.mark.model, pytest.mark.anyio]


class TaskDraft(BaseModel):
    question: str
    difficulty: int


async def test_the_embedded_model_answers_with_schema_constrained_json() -> None:
    pytest.importorskip("llama_cpp", reason="run `python -m toucan.llm.local_build` first")
    from toucan.llm.local_server import LocalModelServer
    from toucan.llm.router import LlmRouter
    from toucan.llm.structured import complete_structured

    server = LocalModelServer(LocalModelConfig(n_threads=1, n_ctx=2048))
    with server:
        models = models_config_for("http://unused", params={"max_tokens": 80})
        models.route_to_local = True
        router = LlmRouter(models, local_base_url=server.base_url)
        messages = [{"role": "user", "content": "Write one question for a weather tool."}]

        draft, reply = await complete_structured(
            router, "generator", messages, TaskDraft, meta=CallMeta(item_id="local_1")
        )

        process = server.process
        assert process is not None and process.poll() is None
    assert isinstance(draft, TaskDraft) and draft.question
    assert reply.usage.completion_tokens > 0
    # the deployment is a config label; the reply names what the server loaded
    assert reply.deployment in {d.name for d in models.group("generator")}
    assert reply.served_by == "SmolLM2-135M-Instruct" and reply.served_by_embedded is True
    assert process.poll() is not None  # stopped with the context
