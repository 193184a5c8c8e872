"""Send a stage's model requests as provider batch jobs and collect the answers.

`BatchRunner.run(target, items)` -> {item_id: LlmReply | LlmError} for items whose deployment
has a batch API (`split` tells them from the rest, which stay online):

1. An item whose request the response cache answers is not sent.
2. An item whose request (same deployment, model, prompt and parameters) is in a recorded job
   is waited for there: a killed run's jobs are polled, never sent again. A job recorded but
   never acknowledged (the run died between creating it and storing its id) is looked up at
   the provider by the key in its metadata first.
3. The rest go out in jobs of at most `max_requests_per_job` lines and `max_bytes_per_job`;
   each job and its request -> item map are stored before the job is created.
4. Jobs are polled with backoff until they end; past `max_wait_s` a job is cancelled and its
   unanswered items fail as `batch_timeout`; a provider out of reach fails them as
   `batch_unreachable`, a job it does not know is `batch_lost` (toucan/llm/batch_jobs.py).
5. A result line becomes an LlmReply through the direct path's `to_reply_from_json`, priced at
   the batch price, with one `llm_call` event; a failed line becomes the item's LlmError with a
   reason token (toucan/llm/batch_lines.py). Items an expired or failed job never ran go out
   again in a new job, at most `max_resubmits` times; whatever a job of an earlier run did not
   answer is sent again once in this run (as an online re-run would ask again).

Replies are not cached here: the caller parses them as after an online call (`parse_outcome`
for structured output: what parses is cached, what does not is repaired online).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from toucan.config import BatchApiConfig
from toucan.errors import ConfigError, LlmError, PromptTooLarge
from toucan.ids import make_id
from toucan.llm.batch_anthropic import AnthropicBatchApi
from toucan.llm.batch_api import BatchApi, OpenAiBatchApi, batch_provider
from toucan.llm.batch_items import BatchItem, Outcome
from toucan.llm.batch_jobs import JobDriver, Line
from toucan.llm.batch_ledger import BatchLedger
from toucan.llm.batch_lines import LineResult, encode_line, make_custom_id
from toucan.llm.errors import ConnectionTrouble
from toucan.llm.prices import FREE, batch_price
from toucan.llm.providers import split_provider
from toucan.llm.replies import CallMeta
from toucan.llm.router import LlmRouter
from toucan.records import BatchJob, utc_now


class BatchRunner:
    """The batch jobs of one run and stage, over the run's router and the store's ledger."""

    def __init__(
        self,
        router: LlmRouter,
        ledger: BatchLedger,
        *,
        run_id: str,
        stage: str,
        config: BatchApiConfig | None = None,
    ) -> None:
        self.router = router
        self.run_id = run_id
        self.stage = stage
        self.config = config or router.models.batch
        self.driver = JobDriver(ledger, self.config, run_id)
        self.apis = {name: self.open_api(name) for name in router.deployments}
        self.prices = {
            # an unknown price is recorded as $0 here, as online (a budget refuses such a run)
            name: batch_price(deployment, router.models.route_to_local) or FREE
            for name, deployment in router.deployments.items()
        }

    def open_api(self, name: str) -> BatchApi | None:
        """The deployment's batch API: OpenAI's (or an OpenAI-compatible server's) over its
        direct endpoint, or Anthropic's Message Batches; None: its items stay online."""
        deployment = self.router.deployments[name]
        endpoint = self.router.endpoints.get(name)
        provider = batch_provider(deployment, self.router.models.route_to_local)
        if provider == "anthropic":
            model, _, _ = split_provider(deployment.model, deployment.api_base)
            return AnthropicBatchApi(self.router.transport, deployment, model)
        if provider == "openai" and endpoint is not None:
            return OpenAiBatchApi(self.router.transport, endpoint, deployment.max_retries)
        return None

    def meta(self, item_id: str, server_id: str | None) -> CallMeta:
        return CallMeta(run_id=self.run_id, stage=self.stage, server_id=server_id, item_id=item_id)

    def deployment_for(self, target: str, item: BatchItem) -> str:
        """The deployment the online path would ask first for this item (its fallbacks do not
        apply to a batch job)."""
        return self.router.plan(target, item.messages, self.meta(item.item_id, item.server_id))[0]

    def split(self, target: str, items: list[BatchItem]) -> tuple[list[BatchItem], list[BatchItem]]:
        """(items whose deployment has a batch API, items that must go online)."""
        batchable: list[BatchItem] = []
        online: list[BatchItem] = []
        for item in items:
            has_api = self.apis.get(self.deployment_for(target, item)) is not None
            (batchable if has_api else online).append(item)
        return batchable, online

    async def run(self, target: str, items: list[BatchItem]) -> dict[str, Outcome]:
        """Every item's reply or error (module docstring). Raises ConfigError for an item
        whose deployment has no batch API (send those online: `split`)."""
        outcomes: dict[str, Outcome] = {}
        lines: dict[str, list[Line]] = defaultdict(list)
        for item in items:
            meta = self.meta(item.item_id, item.server_id)
            cached = self.router.find_cached(target, item.request(), meta=meta)
            if cached is not None:
                outcomes[item.item_id] = cached
                continue
            name = self.deployment_for(target, item)
            if self.apis.get(name) is None:
                raise ConfigError(f"{name} has no batch API: send item {item.item_id} online")
            try:
                lines[name].append(self.make_line(name, item, meta))
            except PromptTooLarge as error:  # that item's final answer; the job goes on
                outcomes[item.item_id] = error
        for part in await asyncio.gather(*(self.run_on(n, ls) for n, ls in lines.items())):
            outcomes.update(part)
        return outcomes

    async def resume(self) -> tuple[dict[str, Outcome], list[str]]:
        """Wait for every job of this stage the store holds as not ended (a killed run's) and
        read it: (replies and final errors by item, items to send again because their job
        expired, failed or never reached the provider). Nothing is sent here; the stage sends
        those items with `run`."""
        outcomes: dict[str, Outcome] = {}
        resend: list[str] = []
        open_jobs = self.driver.ledger.open_jobs(self.stage)
        for read, again in await asyncio.gather(*(self.resume_job(job) for job in open_jobs)):
            outcomes.update(read)
            resend += again
        return outcomes, resend

    async def resume_job(self, job: BatchJob) -> tuple[dict[str, Outcome], list[str]]:
        """One open job of `resume`: (what it answered or failed, items to send again)."""
        requests = self.driver.ledger.requests_of(job.job_key)
        api = self.apis.get(job.deployment)
        if api is None:  # the deployment is gone from the config: ask again elsewhere
            return {}, [request.item_id for request in requests]
        lines = [Line(r.item_id, None, r.request_key, r.custom_id, b"") for r in requests]
        job, results = await self.driver.settle(api, job, lines)
        outcomes: dict[str, Outcome] = {}
        resend: list[str] = []
        for line in lines:
            result = results[line.custom_id]
            if result.unfinished:
                resend.append(line.item_id)
            else:
                outcomes[line.item_id] = self.to_outcome(job.deployment, job, line, result)
        return outcomes, resend

    def make_line(self, name: str, item: BatchItem, meta: CallMeta) -> Line:
        """The item's request line; raises PromptTooLarge for a prompt that cannot fit the
        deployment's context window (checked as online)."""
        api = self.apis[name]
        assert api is not None
        request_key = self.router.request_key(name, item.request()).key
        custom_id = make_custom_id(item.item_id, request_key)
        request = self.router.build_request(name, item.request())
        self.router.check_size(name, request, meta)
        body = api.build_line(custom_id, request)
        return Line(item.item_id, item.server_id, request_key, custom_id, encode_line(body))

    async def run_on(self, name: str, lines: list[Line]) -> dict[str, Outcome]:
        """One deployment's items: recorded jobs waited for, the rest submitted, unfinished
        items sent again while the rules allow (module docstring)."""
        api = self.apis[name]
        assert api is not None
        recorded, fresh = self.find_recorded(lines)
        pending = recorded + await self.submit_all(api, name, fresh, attempt=0)
        outcomes: dict[str, Outcome] = {}
        while pending:
            current, pending = pending, []
            settled = await asyncio.gather(
                *(self.driver.settle(api, job, job_lines) for job, job_lines in current)
            )
            for (_, job_lines), (job, results) in zip(current, settled, strict=True):
                final, again = self.sort_out(name, job, job_lines, results)
                outcomes.update(final)
                attempt = 0 if job.run_id != self.run_id else job.attempt + 1
                pending += await self.submit_all(
                    api, name, again, attempt=attempt, resubmit_of=job.job_key
                )
        return outcomes

    def find_recorded(
        self, lines: list[Line]
    ) -> tuple[list[tuple[BatchJob, list[Line]]], list[Line]]:
        """(recorded jobs with the lines they carry, lines no job carries yet). A line's
        custom id names its item and request, so a recorded one is the same request."""
        ledger = self.driver.ledger
        latest = ledger.latest_requests([line.custom_id for line in lines])
        jobs = ledger.jobs([row.job_key for row in latest.values()])
        by_job: dict[str, list[Line]] = defaultdict(list)
        fresh: list[Line] = []
        for line in lines:
            row = latest.get(line.custom_id)
            if row is None or row.job_key not in jobs:
                fresh.append(line)
            else:
                by_job[row.job_key].append(line)
        return [(jobs[key], job_lines) for key, job_lines in by_job.items()], fresh

    async def submit_all(
        self,
        api: BatchApi,
        name: str,
        lines: list[Line],
        *,
        attempt: int,
        resubmit_of: str | None = None,
    ) -> list[tuple[BatchJob, list[Line]]]:
        """`lines` in as many jobs as the size limits need, each recorded, then submitted."""
        chunks = self.chunk(lines)
        jobs = [
            BatchJob(
                job_key=make_id(
                    "batch", self.run_id, name, attempt, [line.custom_id for line in chunk]
                ),
                provider=api.provider,
                deployment=name,
                model=self.router.model_strings[name],
                stage=self.stage,
                run_id=self.run_id,
                attempt=attempt,
                resubmit_of=resubmit_of,
                request_count=len(chunk),
            )
            for chunk in chunks
        ]
        submitted = await asyncio.gather(
            *(self.driver.submit(api, job, chunk) for job, chunk in zip(jobs, chunks, strict=True))
        )
        return list(zip(submitted, chunks, strict=True))

    def chunk(self, lines: list[Line]) -> list[list[Line]]:
        """Lines in order, cut where a job would pass `max_requests_per_job` lines or
        `max_bytes_per_job` bytes."""
        chunks: list[list[Line]] = []
        current: list[Line] = []
        size = 0
        for line in lines:
            full = len(current) >= self.config.max_requests_per_job
            if current and (full or size + len(line.encoded) > self.config.max_bytes_per_job):
                chunks.append(current)
                current, size = [], 0
            current.append(line)
            size += len(line.encoded)
        return [*chunks, current] if current else chunks

    def sort_out(
        self, name: str, job: BatchJob, lines: list[Line], results: dict[str, LineResult]
    ) -> tuple[dict[str, Outcome], list[Line]]:
        """(final outcomes by item, lines to send again): what the job never ran goes again
        while `max_resubmits` allows; whatever an earlier run's job left unanswered goes
        again once."""
        earlier = job.run_id != self.run_id
        may_resend = earlier or job.attempt < self.config.max_resubmits
        final: dict[str, Outcome] = {}
        again: list[Line] = []
        for line in lines:
            result = results[line.custom_id]
            if result.body is None and may_resend and (earlier or result.unfinished):
                again.append(line)
            else:
                final[line.item_id] = self.to_outcome(name, job, line, result)
        return final, again

    def to_outcome(self, name: str, job: BatchJob, line: Line, result: LineResult) -> Outcome:
        """The item's LlmReply (as the online path makes it, at the batch price) or LlmError,
        and its `llm_call` event."""
        meta = self.meta(line.item_id, line.server_id)
        ended = job.ended_at or utc_now()
        latency_ms = (ended - job.submitted_at).total_seconds() * 1000
        if result.body is not None:
            api = self.apis[name]
            assert api is not None
            try:
                reply = api.to_reply(result.body, line.encoded, name, job.model, latency_ms)
            except (ConnectionTrouble, ValueError, KeyError, TypeError) as error:
                result = LineResult(
                    custom_id=line.custom_id, reason="batch_malformed_line", detail=str(error)
                )
            else:
                reply.served_by_embedded = self.router.models.route_to_local
                reply.cost_usd = self.prices[name].cost(
                    reply.usage.prompt_tokens, reply.usage.completion_tokens
                )
                self.router.record_event(meta, name, status="ok", reply=reply)
                return reply
        reason = result.reason or "batch_missing_result"
        error = LlmError(f"{name}: {reason}: {result.detail}", reason=reason)
        self.router.record_event(meta, name, status="error", error=error, latency_ms=latency_ms)
        return error
