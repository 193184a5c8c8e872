"""Fixtures of the model-layer tests: the fake model server over real HTTP."""

import pytest

from tests.fake_llm import fake_llm

__all__ = ["anyio_backend", "fake_llm", "transport"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["direct", "litellm"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both ways to a deployment: our aiohttp transport and LiteLLM's Router."""
    return request.param
