"""Fixtures of the model-layer tests: the fake model server over real HTTP."""

import pytest

from tests.fake_llm import fake_llm

__all__ = ["anyio_backend", "fake_llm"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
