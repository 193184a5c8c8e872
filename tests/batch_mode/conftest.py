"""Fixtures of the batch-mode tests: the fake model server (chat, files and batches over real
HTTP) answering as a competent generator and a picky judge."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.batch_mode.helpers import model_reply
from tests.fake_llm import FakeLlm
from tests.synthesize.seed import FAKE_KEY_ENV


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLlm]:
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-fake")
    with FakeLlm(default=model_reply) as server:
        yield server
