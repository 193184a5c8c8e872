"""Budget stage tests use the stage 2 fixtures: fake model server, seeded store, config file."""

from __future__ import annotations

from tests.synthesize.conftest import config_path, fake_llm, store

__all__ = ["config_path", "fake_llm", "store"]
