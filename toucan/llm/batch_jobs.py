"""One provider batch job's life: submit (recorded first), wait with backoff, read its results.

`JobDriver` talks to a deployment's batch API (toucan/llm/batch_api.py) and keeps the job's row
in the store (toucan/llm/batch_ledger.py) current; which items go into which job, and what
happens to their results, is decided by toucan/llm/batch_runner.py.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random_exponential,
)

from toucan.config import BatchApiConfig
from toucan.llm.batch_api import BatchApi, BatchState
from toucan.llm.batch_ledger import BatchLedger
from toucan.llm.batch_lines import LineResult, settle_lines
from toucan.llm.deployments import BACKOFF_BASE_S, BACKOFF_MAX_S
from toucan.llm.errors import ConnectionTrouble, HttpStatusError, is_rate_limit, is_retryable
from toucan.records import BatchJob, BatchRequest, utc_now

T = TypeVar("T")
REASON_BY_STATUS = {
    "expired": "batch_expired",
    "failed": "batch_failed",
    "cancelled": "batch_cancelled",
}
TRANSPORT_ERRORS = (HttpStatusError, ConnectionTrouble, TimeoutError)


@dataclass(frozen=True)
class Line:
    """One item's request as a line of a batch job."""

    item_id: str
    server_id: str | None
    request_key: str  # the response cache key of the request
    custom_id: str
    encoded: bytes  # the JSONL line, newline included


def is_transient(error: BaseException) -> bool:
    """Worth another try: what the chat path retries, and 429s (a status check can wait)."""
    return is_retryable(error) or is_rate_limit(error)


def unix_seconds(job: BatchJob) -> float:
    """When the job was recorded, in unix seconds (the store keeps naive UTC)."""
    return job.submitted_at.replace(tzinfo=UTC).timestamp()


def apply_state(job: BatchJob, state: BatchState) -> BatchJob:
    """The job's row updated from the provider's view of it."""
    update = {
        "job_id": state.job_id,
        "status": state.status,
        "input_file_id": state.input_file_id or job.input_file_id,
        "output_file_id": state.output_file_id,
        "error_file_id": state.error_file_id,
        "completed_count": state.completed,
        "failed_count": state.failed,
        "checked_at": utc_now(),
    }
    if state.ended:
        update["ended_at"] = job.ended_at or utc_now()
        update["reason"] = job.reason or REASON_BY_STATUS.get(state.status)
        update["detail"] = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in state.errors)
    return job.model_copy(update=update)


class JobDriver:
    """Submits, watches and reads the jobs of one run and stage."""

    def __init__(self, ledger: BatchLedger, config: BatchApiConfig, run_id: str) -> None:
        self.ledger = ledger
        self.config = config
        self.run_id = run_id

    async def call(self, api: BatchApi, operation: Callable[..., Awaitable[T]], *args: object) -> T:
        """One call of `api`, retried with backoff on transient trouble (tenacity), up to the
        deployment's `max_retries` times."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(api.max_retries + 1),
            wait=wait_random_exponential(multiplier=BACKOFF_BASE_S, max=BACKOFF_MAX_S),
            reraise=True,
        )
        return await retrying(operation, *args)

    async def submit(self, api: BatchApi, job: BatchJob, lines: list[Line]) -> BatchJob:
        """Record the job and its lines, then create it. A refused submission (4xx) fails the
        job; one that may have reached the provider (timeouts, 5xx) stays `submitting`, so the
        next run looks for it (by its key) before sending anything again."""
        requests = [
            BatchRequest(
                job_key=job.job_key,
                custom_id=line.custom_id,
                item_id=line.item_id,
                request_key=line.request_key,
                deployment=job.deployment,
                stage=job.stage,
                run_id=job.run_id,
            )
            for line in lines
        ]
        self.ledger.record_submission(job, requests)
        try:
            payload = b"".join(line.encoded for line in lines)
            state = await self.call(api, api.submit, job.job_key, payload)
        except TRANSPORT_ERRORS as error:
            refused = isinstance(error, HttpStatusError) and not is_transient(error)
            update = {"reason": "batch_submit_failed", "detail": str(error)[:500]}
            if refused:
                update.update(status="failed", ended_at=utc_now())
            job = job.model_copy(update=update)
        else:
            job = apply_state(job, state)
        self.ledger.save(job)
        return job

    async def acknowledge(self, api: BatchApi, job: BatchJob) -> BatchJob:
        """A job recorded as `submitting` by a run that ended before it learnt the job's id:
        found at the provider by its key, or (not there) left without a job id."""
        if job.job_id is not None or job.status != "submitting" or job.run_id == self.run_id:
            return job  # (this run knows how its own submission went)
        taken = self.ledger.job_ids_since(job.submitted_at)
        state = await self.call(api, api.find, job, taken)
        if state is None:
            return job
        job = apply_state(job, state)
        self.ledger.save(job)
        return job

    async def check(self, api: BatchApi, job: BatchJob) -> BatchState:
        """One status check; the job's row follows a change of status."""
        state = await api.retrieve(job.job_id or "")
        if state.status != job.status:
            self.ledger.save(apply_state(job, state))
        return state

    async def poll(self, api: BatchApi, job: BatchJob, budget_s: float) -> BatchState | None:
        """The job's state once it ended, or None when `budget_s` ran out first. Checks back
        off from `poll_initial_s` to `poll_max_s`; transient errors are checked again."""
        retrying = AsyncRetrying(
            retry=retry_if_result(lambda state: not state.ended) | retry_if_exception(is_transient),
            wait=wait_exponential(
                multiplier=self.config.poll_initial_s,
                min=self.config.poll_initial_s,
                max=self.config.poll_max_s,
            ),
            stop=stop_after_delay(max(budget_s, 0.0)),
            retry_error_callback=lambda _: None,
        )
        return await retrying(self.check, api, job)

    async def wait(self, api: BatchApi, job: BatchJob) -> tuple[BatchState | None, bool]:
        """(the ended job's state, whether toucan gave up on it). Past `max_wait_s` since it
        was submitted the job is cancelled and waited for `cancel_wait_s` more, for the
        answers it has (OpenAI: a cancelled job keeps its partial results)."""
        deadline = unix_seconds(job) + self.config.max_wait_s
        state = await self.poll(api, job, deadline - time.time())
        if state is not None:
            return state, False
        cancelled = await self.call(api, api.cancel, job.job_id or "")
        self.ledger.save(apply_state(job, cancelled))
        return await self.poll(api, job, self.config.cancel_wait_s), True

    async def settle(
        self, api: BatchApi, job: BatchJob, lines: list[Line]
    ) -> tuple[BatchJob, dict[str, LineResult]]:
        """Wait for the job to end and read every line's result (by custom id). A provider
        that cannot be reached (after the retries) fails the lines as `batch_unreachable`
        and leaves the job open for the next run; a job the provider does not know (404) is
        `batch_lost`, and its lines are unfinished."""
        custom_ids = [line.custom_id for line in lines]
        try:
            return await self.follow(api, job, custom_ids)
        except TRANSPORT_ERRORS as error:
            detail = f"{type(error).__name__}: {error}"[:500]
            if not (isinstance(error, HttpStatusError) and error.status_code == 404):
                return job, uniform_results(custom_ids, "batch_unreachable", detail)
            update = {"status": "failed", "reason": "batch_lost", "detail": detail}
            job = job.model_copy(update={**update, "ended_at": utc_now()})
            self.ledger.save(job)
            return job, uniform_results(custom_ids, "batch_lost", detail, unfinished=True)

    async def follow(
        self, api: BatchApi, job: BatchJob, custom_ids: list[str]
    ) -> tuple[BatchJob, dict[str, LineResult]]:
        """`settle` without its handling of a provider out of reach."""
        job = await self.acknowledge(api, job)
        if job.job_id is None:
            # never reached the provider, so nothing ran: an earlier run's lines go out again;
            # this run's failed submission is final (it may yet exist: the next run looks)
            reason = job.reason or "batch_not_submitted"
            again = job.run_id != self.run_id
            return job, uniform_results(custom_ids, reason, job.detail, unfinished=again)
        state, gave_up = await self.wait(api, job)
        if gave_up:
            job = job.model_copy(update={"reason": "batch_timeout"})
        if state is None:  # not even ended after the cancel: nothing to read
            job = job.model_copy(update={"ended_at": utc_now()})
            self.ledger.save(job)
            return job, uniform_results(custom_ids, "batch_timeout", "not ended after cancel")
        files = await self.call(api, api.results, state)
        job = apply_state(job, state)
        self.ledger.save(job)
        results = settle_lines(custom_ids, state, files, api.read_line)
        if gave_up:  # what the cancelled job never ran is ours to give up on, not to resend
            results = {
                cid: result.model_copy(update={"reason": "batch_timeout", "unfinished": False})
                if result.unfinished
                else result
                for cid, result in results.items()
            }
        return job, results


def uniform_results(
    custom_ids: list[str], reason: str, detail: str, *, unfinished: bool = False
) -> dict[str, LineResult]:
    """The same result for every line of a job that has no result files."""
    return {
        cid: LineResult(custom_id=cid, reason=reason, detail=detail, unfinished=unfinished)
        for cid in custom_ids
    }
