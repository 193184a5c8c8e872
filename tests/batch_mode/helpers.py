"""Shared set-up of the batch-mode stage tests: every deployment on the fake model server with
a batch API and a price, quick status checks, and a judge that keeps some tasks and not others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.synthesize.seed import (
    GENERATORS,
    JUDGE,
    TEACHER,
    judge_with,
    request_digest,
    stage_model,
    write_config,
)

INPUT_PRICE = 1e-6  # $ per prompt token online; the batch price is half (batch_price_factor)
OUTPUT_PRICE = 2e-6
FAST_JOBS = {"poll_initial_s": 0.02, "poll_max_s": 0.1, "max_wait_s": 120, "cancel_wait_s": 10}
PRICED = {"supports_batch": True, "input_cost_per_token": INPUT_PRICE,
          "output_cost_per_token": OUTPUT_PRICE}  # fmt: skip


def batch_config(
    path: Path, base_url: str, *, mode: str = "batch", jobs: dict[str, Any] | None = None,
    min_items: int = 1000, provider: str = "openai", **sections: Any,
) -> Path:  # fmt: skip
    """A config whose single-call stages run in `mode`, every deployment batch-capable and
    priced, jobs checked every few ms (`jobs` overrides models.batch). `provider` "anthropic":
    every deployment an `anthropic/` model on the fake's Messages API and Message Batches."""
    stage = {"mode": mode, "batch_min_items": min_items}
    modes = {
        "synthesize": {**stage, **sections.pop("synthesize", {})},
        "filter_tasks": {**stage, **sections.pop("filter_tasks", {})},
        "filter_trajectories": {**stage, **sections.pop("filter_trajectories", {})},
        "extensions": {"diversify_mode": mode, "diversify_batch_min_items": min_items},
    }
    per_deployment = {name: dict(PRICED) for name in [*GENERATORS, JUDGE, TEACHER]}
    write_config(path, base_url, per_deployment=per_deployment, **modes, **sections)
    config = yaml.safe_load(path.read_text())
    config["models"]["batch"] = {**FAST_JOBS, **(jobs or {})}
    config["models"]["teachers"][0].update(PRICED)
    if provider == "anthropic":
        for group in ("generators", "teachers", "judge"):
            for deployment in config["models"][group]:
                name = deployment["name"]
                deployment.update(model=f"anthropic/{name}", api_base=base_url.removesuffix("/v1"))
    path.write_text(yaml.safe_dump(config))
    return path


def picky_judge(request: dict[str, Any]) -> dict[str, Any]:
    """Scores every dimension 5 for two tasks in three, 1 for the third (by the prompt)."""
    return judge_with(1 if request_digest(request) % 3 == 0 else 5)(request)


# a competent generator (tasks, diversified variants) and a picky judge
model_reply = stage_model(picky_judge)
