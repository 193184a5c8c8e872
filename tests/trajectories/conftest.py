"""Fixtures of the trajectory tests: the fake model server over real HTTP."""

import warnings
from collections.abc import Iterator

import pytest

from tests.fake_llm import fake_llm

__all__ = ["fake_llm", "quiet_litellm_typeddict_warning"]


@pytest.fixture(autouse=True)
def quiet_litellm_typeddict_warning() -> Iterator[None]:
    """LiteLLM 1.110's Router declares a TypedDict with `ReadOnly` items; pydantic warns about
    it when the Router is first built. Third-party and harmless; everything else still fails."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*using the `ReadOnly` qualifier", category=UserWarning
        )
        yield
