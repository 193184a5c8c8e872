"""The store's record of provider batch jobs (`batch_jobs`, `batch_requests`).

A job and its request -> item map are written before the job is created, and the job again
whenever its state changes, so a killed run's successor waits for the jobs already paid for
instead of sending their requests again. Reads and writes are short (toucan/store.py); the
runner calls them from the process that writes the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from toucan.llm.batch_api import TERMINAL
from toucan.records import BatchJob, BatchRequest
from toucan.store import Store, among


class BatchLedger:
    """Batch jobs and their lines in one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record_submission(self, job: BatchJob, requests: Sequence[BatchRequest]) -> None:
        """The job (status `submitting`) and its lines, in one transaction, before the job
        is sent to the provider."""
        self.store.upsert([job, *requests])

    def save(self, job: BatchJob) -> None:
        """The job's row as it is now (insert or replace)."""
        self.store.upsert([job])

    def latest_requests(self, custom_ids: Sequence[str]) -> dict[str, BatchRequest]:
        """custom id -> its line in the most recently submitted job that carries it."""
        if not custom_ids:
            return {}
        rows = self.store.select(BatchRequest, among("custom_id"), [list(custom_ids)])
        jobs = self.jobs([row.job_key for row in rows])
        rows = [row for row in rows if row.job_key in jobs]
        rows.sort(key=lambda row: (jobs[row.job_key].submitted_at, jobs[row.job_key].attempt))
        return {row.custom_id: row for row in rows}  # the latest job's line wins

    def jobs(self, job_keys: Sequence[str]) -> dict[str, BatchJob]:
        """The recorded jobs among these keys, by key."""
        if not job_keys:
            return {}
        found = self.store.select(BatchJob, among("job_key"), [sorted(set(job_keys))])
        return {job.job_key: job for job in found}

    def requests_of(self, job_key: str) -> list[BatchRequest]:
        """The job's lines: its request -> item map."""
        return self.store.select(BatchRequest, "job_key = ?", [job_key])

    def open_jobs(self, stage: str | None = None) -> list[BatchJob]:
        """Jobs not ended yet (oldest first), optionally of one stage: what a resumed run
        waits for."""
        where = f"NOT {among('status')}"
        params: list[object] = [sorted(TERMINAL)]
        if stage is not None:
            where += " AND stage = ?"
            params.append(stage)
        return sorted(self.store.select(BatchJob, where, params), key=lambda job: job.submitted_at)

    def job_ids_since(self, since: datetime, slack: timedelta = timedelta(hours=1)) -> set[str]:
        """Provider ids of the jobs recorded from about `since` on: batches that are some
        other job's, when a job recorded without its id is looked for."""
        rows = self.store.select(
            BatchJob, "job_id IS NOT NULL AND submitted_at >= ?", [since - slack]
        )
        return {job.job_id for job in rows if job.job_id}
