"""Fixtures for stage 2 tests: fake model server, seeded store, config file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_llm import FakeLlm
from tests.synthesize.seed import FAKE_KEY_ENV, competent_model, seed_servers, write_config
from toucan.store import Store


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLlm]:
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-fake")
    with FakeLlm(default=competent_model) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Store:
    target = Store(tmp_path / "toucan.duckdb")
    seed_servers(target)
    return target


@pytest.fixture
def config_path(tmp_path: Path, fake_llm: FakeLlm) -> Path:
    return write_config(tmp_path / "toucan.yaml", fake_llm.base_url)
