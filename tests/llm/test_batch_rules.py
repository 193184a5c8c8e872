"""Batch rules without a job: who has a batch API, when a stage batches, batch prices, reading
result lines, and the fake server's Batch API as the openai SDK's own types read it."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types import Batch, FileObject

from tests.fake_llm import FakeLlm, Rule
from tests.fake_llm_batches import JobPlan
from toucan.config import ModelDeployment, load_settings
from toucan.llm.batch_anthropic import read_message_batch
from toucan.llm.batch_anthropic import read_result_line as read_anthropic_line
from toucan.llm.batch_api import BatchState, ResultFiles, batch_provider, has_batch_api
from toucan.llm.batch_items import use_batch
from toucan.llm.batch_lines import read_result_file, settle_lines
from toucan.llm.prices import ModelPrice, batch_price


def deployment(model: str, **fields: object) -> ModelDeployment:
    return ModelDeployment(name="d", model=model, **fields)  # type: ignore[arg-type]


def test_openai_and_anthropic_have_a_batch_api_and_other_providers_only_when_configured() -> None:
    assert batch_provider(deployment("openai/gpt-4o-mini"), route_to_local=False) == "openai"
    assert batch_provider(deployment("anthropic/claude-3-opus-20240229"), False) == "anthropic"
    assert batch_provider(deployment("together_ai/Qwen/Qwen2-72B-Instruct"), False) is None
    served = deployment("openai/my-model", api_base="http://127.0.0.1:9/v1")
    assert batch_provider(served, False) is None  # a self-hosted server: only if it says so
    assert batch_provider(served.model_copy(update={"supports_batch": True}), False) == "openai"
    off = deployment("openai/gpt-4o-mini", supports_batch=False)
    assert batch_provider(off, False) is None
    assert batch_provider(deployment("openai/gpt-4o-mini"), route_to_local=True) is None
    claude = deployment("anthropic/claude-3-opus-20240229", transport="litellm")
    assert has_batch_api(claude, False)  # Message Batches are posted by toucan, not LiteLLM
    assert not has_batch_api(deployment("openai/gpt-4o-mini", transport="litellm"), False)


def test_a_stage_batches_in_batch_mode_and_in_auto_mode_above_its_threshold() -> None:
    assert use_batch("batch", batchable_items=1, min_items=1000)
    assert not use_batch("batch", batchable_items=0, min_items=0)
    assert not use_batch("online", batchable_items=10**6, min_items=0)
    assert use_batch("auto", batchable_items=1001, min_items=1000)
    assert not use_batch("auto", batchable_items=1000, min_items=1000)


def test_the_stage_modes_are_settings_with_online_as_the_default() -> None:
    settings = load_settings(profile="local")
    stages = (settings.synthesize, settings.filter_tasks, settings.filter_trajectories)
    assert {(stage.mode, stage.batch_min_items) for stage in stages} == {("online", 1000)}
    assert settings.extensions.diversify_mode == "online"
    tuned = load_settings(profile="local", overrides={"filter_tasks": {"mode": "auto"}})
    assert tuned.filter_tasks.mode == "auto"


def prices_of(price: ModelPrice | None) -> tuple[float, float] | None:
    return None if price is None else (price.input_per_token, price.output_per_token)


def test_batch_prices_come_from_the_config_then_the_price_map_then_half_the_online_price() -> None:
    explicit = deployment("openai/gpt-4o-mini", batch_input_cost_per_token=1e-9)
    assert prices_of(batch_price(explicit)) == (1e-9, 0.0)
    mapped = deployment("openai/gpt-4o-mini")  # LiteLLM's map has its batch price
    assert prices_of(batch_price(mapped)) == pytest.approx((7.5e-08, 3e-07))
    online = deployment("openai/gpt-4o-mini", input_cost_per_token=4e-6, output_cost_per_token=8e-6)
    assert prices_of(batch_price(online)) == pytest.approx((2e-6, 4e-6))
    cheaper = online.model_copy(update={"batch_price_factor": 0.25})
    assert prices_of(batch_price(cheaper)) == pytest.approx((1e-6, 2e-6))
    unknown = deployment("openai/no-such-model")
    assert batch_price(unknown) is None


def test_result_lines_that_cannot_be_read_are_pinned_to_their_item_when_possible() -> None:
    completion = {"choices": [{"message": {"content": "ok"}}], "usage": {}}
    ok = {"custom_id": "a", "response": {"status_code": 200, "body": completion}, "error": None}
    no_choices = {"custom_id": "b", "response": {"status_code": 200, "body": {}}, "error": None}
    output = "\n".join(
        [json.dumps(ok), json.dumps(no_choices), '{"id": "x", "custom_id": "c", "resp', "garbage"]
    ).encode()

    results, unattributed = read_result_file(output)

    assert results["a"].body == completion
    assert results["b"].reason == results["c"].reason == "batch_malformed_line"
    assert unattributed == 1
    state = BatchState(job_id="batch_1", status="completed", completed=4)
    settled = settle_lines(["a", "b", "c", "d"], state, ResultFiles(output=output))
    assert settled["d"].reason == "batch_malformed_line"  # lost to the unreadable line
    clean = settle_lines(["d"], state, ResultFiles(output=json.dumps(ok).encode()))
    assert clean["d"].reason == "batch_missing_result"


def test_requests_a_job_never_ran_are_unfinished_and_other_errors_are_final() -> None:
    expired = {
        "custom_id": "a",
        "response": None,
        "error": {"code": "batch_expired", "message": ""},
    }
    refused = {
        "custom_id": "b",
        "response": None,
        "error": {"code": "invalid_model", "message": ""},
    }
    errors = f"{json.dumps(expired)}\n{json.dumps(refused)}\n".encode()
    state = BatchState(job_id="batch_1", status="expired")

    settled = settle_lines(["a", "b", "c"], state, ResultFiles(errors=errors))

    assert (settled["a"].reason, settled["a"].unfinished) == ("batch_expired", True)
    assert (settled["b"].reason, settled["b"].unfinished) == ("batch_request_failed", False)
    assert (settled["c"].reason, settled["c"].unfinished) == ("batch_expired", True)


def test_the_fake_batch_api_validates_against_the_openai_sdk_types(fake_llm: FakeLlm) -> None:
    fake_llm.script([Rule(contains="two", status=500)])
    fake_llm.batches.plan([JobPlan(delay_s=3600), JobPlan()])
    client = openai.OpenAI(base_url=fake_llm.base_url, api_key="test", max_retries=0)
    lines = [
        {"custom_id": f"c{n}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "m", "messages": [{"role": "user", "content": word}]}}
        for n, word in enumerate(["one", "two"])
    ]  # fmt: skip
    upload = client.files.create(
        file=("in.jsonl", "\n".join(json.dumps(line) for line in lines).encode()), purpose="batch"
    )
    FileObject.model_validate(upload.model_dump())
    slow, quick = (
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for _ in range(2)
    )
    assert slow.status == "validating"
    cancelled = client.batches.cancel(slow.id)
    assert cancelled.status == "cancelling"

    done = Batch.model_validate(client.batches.retrieve(quick.id).model_dump())
    listed = client.batches.list(limit=1)

    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    assert done.output_file_id and done.error_file_id
    failed_line = json.loads(client.files.content(done.error_file_id).text)
    assert failed_line["custom_id"] == "c1" and failed_line["response"]["status_code"] == 500
    assert [batch.id for batch in listed.data] == [quick.id] and listed.has_more
    assert client.batches.retrieve(slow.id).status == "cancelled"
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-none")

    control = fake_llm.base_url.removesuffix("/v1") + "/_fake/batches"
    httpx.post(f"{control}/plan", json=[{"outcome": "failed", "fail_code": "quota"}])
    doomed = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = client.batches.retrieve(doomed.id)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert failed.errors.data[0].code == "quota"
    counts = httpx.get(control).json()
    assert (counts["jobs_created"], counts["requests_received"]) == (3, 6)
    assert counts["by_status"] == {"cancelled": 1, "completed": 1, "failed": 1}
    client.close()


def test_anthropic_batches_and_result_lines_read_in_openai_terms() -> None:
    def batch(status: str, **fields: object) -> BatchState:
        counts = {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0}
        data = {"id": "msgbatch_1", "processing_status": status, "request_counts": counts}
        data["created_at"] = "2026-12-02T05:00:00Z"
        return read_message_batch({**data, **fields})

    assert batch("in_progress").status == "in_progress" and not batch("in_progress").ended
    assert batch("canceling").status == "cancelling"
    done = batch("ended", results_url="https://x/results")
    assert (done.status, done.completed, done.failed, done.total) == ("completed", 2, 1, 3)
    assert done.output_file_id == "https://x/results" and done.created_at == 1796187600
    assert batch("ended", cancel_initiated_at="2026-12-02T05:01:00Z").status == "cancelled"
    counts = {"succeeded": 1, "expired": 2}
    assert batch("ended", request_counts=counts).status == "expired"

    message = {"content": [{"type": "text", "text": "hi"}], "usage": {}}
    errored = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    lines = [
        {"custom_id": "a", "result": {"type": "succeeded", "message": message}},
        {"custom_id": "b", "result": {"type": "errored", "error": errored}},
        {"custom_id": "c", "result": {"type": "expired"}},
        {"custom_id": "d", "result": {"type": "canceled"}},
        {"custom_id": "e", "result": {"type": "succeeded", "message": {"text": "?"}}},
        {"result": {"type": "succeeded"}},
    ]
    read = [read_anthropic_line(line) for line in lines]
    assert read[0] is not None and read[0].body == message
    found = {r.custom_id: (r.reason, r.unfinished) for r in read[1:5] if r is not None}
    assert found == {
        "b": ("batch_request_failed", False),
        "c": ("batch_expired", True),
        "d": ("batch_cancelled", True),
        "e": ("batch_malformed_line", False),
    }
    assert read[1] is not None and "overloaded_error: busy" in read[1].detail
    assert read[5] is None
