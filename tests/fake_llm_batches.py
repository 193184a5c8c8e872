"""The OpenAI Files and Batch API of the fake model server (tests/fake_llm.py), over real HTTP.

Shapes follow the OpenAI API reference ("Files", "Batch", "The request input object", "The
request output object") and the openai SDK's `types/batch.py`:

    POST /v1/files             multipart `file` + `purpose=batch`          -> File object
    GET  /v1/files/{id}        -> File object;  GET /v1/files/{id}/content -> the bytes
    POST /v1/batches           {input_file_id, endpoint, completion_window, metadata} -> Batch
    GET  /v1/batches/{id}      POST /v1/batches/{id}/cancel      GET /v1/batches?after=&limit=

An input line is `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`;
bodies are answered by the chat endpoint's own rules (a script answers a batch line exactly as
it answers the same chat request), when the job ends. Output lines are
`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}`,
written in reverse input order (providers promise no order); a rule's error status lands in the
error file the same way, an unfinished request of an expired or cancelled job as
`{"response": null, "error": {"code": "batch_expired" | "batch_cancelled", "message"}}`.

Each job follows a `JobPlan` (`plan(plans, default)`: the n-th job created after that call
takes `plans[n]`, later ones `default`): `delay_s` from `validating` through `in_progress` to the end, `hold` (stay
`in_progress` until `release()`: a job that never completes), `outcome` completed | expired |
failed, `answered` (lines answered before an expiry), `malformed_lines` (the first N output
lines cut in half), `missing_output` (the output file id names no file), `hold_create` (the
create call answers only after `release_create()`: a client killed mid-submit).
Counters: `fake_llm.batches.counts` and GET `/_fake/batches`; POST `/_fake/batches/plan` (a JSON
list of plans), POST `/_fake/batches/release`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LineAnswer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
WINDOW_S = 24 * 3600  # the only completion_window OpenAI accepts: "24h"
GATE_TIMEOUT_S = 60.0  # a held create never outlives a test that forgot to release it
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class JobPlan:
    """How one batch job behaves (module docstring)."""

    delay_s: float = 0.0
    hold: bool = False
    outcome: Literal["completed", "expired", "failed"] = "completed"
    answered: int | None = None  # expired: lines answered first (None = half, rounded down)
    malformed_lines: int = 0
    missing_output: bool = False
    hold_create: bool = False
    fail_code: str = "fake_batch_failure"


@dataclass
class BatchCounts:
    jobs_created: int = 0
    requests_received: int = 0  # input lines of created jobs
    files_uploaded: int = 0
    retrieves: int = 0
    cancels: int = 0
    lists: int = 0
    by_status: Counter[str] = field(default_factory=Counter)  # jobs by their final status

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "by_status": dict(self.by_status)}


@dataclass
class LineOutcome:
    """One input line of an ended job: the chat rules' answer, or None (never ran)."""

    custom_id: str
    index: int
    status_code: int | None
    payload: dict[str, Any] | None


@dataclass
class FakeJob:
    batch: dict[str, Any]  # an OpenAI Batch object (the Anthropic view renders it)
    lines: list[dict[str, Any]]  # {"custom_id", "body": an OpenAI chat request body}
    plan: JobPlan
    started: float  # monotonic
    cancel_requested: bool = False
    provider: Literal["openai", "anthropic"] = "openai"
    outcomes: list[LineOutcome] = field(default_factory=list)


def error_body(message: str, status: int) -> JSONResponse:
    error = {"message": message, "type": "invalid_request_error", "code": None}
    return JSONResponse({"error": error}, status_code=status)


def check_lines(content: bytes, endpoint: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The input file's request lines, or the validation error that fails the job."""
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            return [], {"code": "invalid_json_line", "line": number, "message": "not JSON"}
        custom_id = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(custom_id, str) or custom_id in seen:
            return [], {
                "code": "invalid_custom_id",
                "line": number,
                "message": "missing or repeated",
            }
        if line.get("url") != endpoint or not isinstance(line.get("body"), dict):
            return [], {"code": "invalid_request", "line": number, "message": "url or body"}
        seen.add(custom_id)
        lines.append(line)
    if not lines:
        return [], {"code": "empty_file", "line": None, "message": "no request lines"}
    return lines, {}


class FakeBatches:
    """Files and batch jobs of one FakeLlm; `answer_line` is its chat rule engine."""

    def __init__(self, answer_line: LineAnswer) -> None:
        self.answer_line = answer_line
        self.counts = BatchCounts()
        self.plans: list[JobPlan] = []
        self.default_plan = JobPlan()
        self._planned_from = 0  # jobs created before the current plans were given
        self.job_created = threading.Event()  # set by every create (waits in tests)
        self.polled = threading.Event()  # set by every retrieve
        self._files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._jobs: dict[str, FakeJob] = {}
        self._ids = itertools.count(1)
        self._released = threading.Event()
        self._create_released = threading.Event()
        self._lock = threading.Lock()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self.handle_upload, methods=["POST"]),
            Route("/v1/files/{file_id}", self.handle_file, methods=["GET"]),
            Route("/v1/files/{file_id}/content", self.handle_content, methods=["GET"]),
            Route("/v1/batches", self.handle_create, methods=["POST"]),
            Route("/v1/batches", self.handle_list, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.handle_retrieve, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.handle_cancel, methods=["POST"]),
            Route("/_fake/batches", self.handle_counts, methods=["GET"]),
            Route("/_fake/batches/plan", self.handle_plan, methods=["POST"]),
            Route("/_fake/batches/release", self.handle_release, methods=["POST"]),
        ]

    def plan(self, plans: list[JobPlan], default: JobPlan | None = None) -> None:
        """The n-th job created from now on follows plans[n]; later ones `default`."""
        with self._lock:
            self.plans = list(plans)
            self.default_plan = default or JobPlan()
            self._planned_from = self.counts.jobs_created

    def release(self) -> None:
        """Let held jobs (`hold=True`) run on to their outcome."""
        self._released.set()

    def release_create(self) -> None:
        """Let held create calls (`hold_create=True`) answer."""
        self._create_released.set()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids):06d}"

    def store_file(self, content: bytes, purpose: str, filename: str) -> dict[str, Any]:
        file_id = self.new_id("file")
        created = int(time.time())
        info = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": created,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": created + 30 * 24 * 3600,
        }
        with self._lock:
            self._files[file_id] = (info, content)
        return info

    async def handle_upload(self, request: Request) -> Response:
        form = await request.form()
        upload = form.get("file")
        purpose = form.get("purpose")
        if purpose != "batch" or upload is None or isinstance(upload, str):
            return error_body("a file with purpose=batch is required", 400)
        content = await upload.read()
        await form.close()
        with self._lock:
            self.counts.files_uploaded += 1
        return JSONResponse(self.store_file(content, "batch", upload.filename or "input.jsonl"))

    async def handle_file(self, request: Request) -> Response:
        held = self._files.get(request.path_params["file_id"])
        return JSONResponse(held[0]) if held else error_body("No such File object", 404)

    async def handle_content(self, request: Request) -> Response:
        held = self._files.get(request.path_params["file_id"])
        if held is None:
            return error_body("No such File object", 404)
        return Response(held[1], media_type="application/octet-stream")

    async def handle_create(self, request: Request) -> Response:
        body = await request.json()
        held = self._files.get(str(body.get("input_file_id")))
        if held is None or held[0]["purpose"] != "batch":
            return error_body("input_file_id names no batch file", 400)
        if body.get("completion_window") != "24h":
            return error_body("completion_window must be 24h", 400)
        endpoint = str(body.get("endpoint"))
        lines, problem = check_lines(held[1], endpoint)
        job = self.create_job(body, endpoint, lines, problem)
        await self.hold_create(job)
        return JSONResponse(job.batch)

    async def hold_create(self, job: FakeJob) -> None:
        """A create call answers only after `release_create()` when its job's plan says so."""
        if job.plan.hold_create:
            await asyncio.to_thread(self._create_released.wait, GATE_TIMEOUT_S)

    def create_job(
        self,
        body: dict[str, Any],
        endpoint: str,
        lines: list[dict[str, Any]],
        problem: dict,
        provider: Literal["openai", "anthropic"] = "openai",
    ) -> FakeJob:
        now = int(time.time())
        with self._lock:
            index = self.counts.jobs_created - self._planned_from
            plan = self.plans[index] if index < len(self.plans) else self.default_plan
            self.counts.jobs_created += 1
            self.counts.requests_received += len(lines)
        batch = {
            "id": self.new_id("batch"),
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": body.get("input_file_id"),
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + WINDOW_S,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        job = FakeJob(
            batch=batch, lines=lines, plan=plan, started=time.monotonic(), provider=provider
        )
        if problem:
            job.plan = JobPlan(outcome="failed", fail_code=problem["code"])
            batch["errors"] = {"object": "list", "data": [problem]}
        with self._lock:
            self._jobs[batch["id"]] = job
        self.job_created.set()
        return job

    def advance(self, job: FakeJob) -> None:
        """Move the job along its plan as time passes (called on every read of it)."""
        batch = job.batch
        if batch["status"] in TERMINAL:
            return
        now = int(time.time())
        if job.cancel_requested:
            self.finish(job, "cancelled", answered=0)
            return
        elapsed = time.monotonic() - job.started
        if (job.plan.hold and not self._released.is_set()) or elapsed < job.plan.delay_s:
            early = not job.plan.hold and elapsed < job.plan.delay_s / 4
            batch["status"] = "validating" if early else "in_progress"
            batch["in_progress_at"] = None if early else batch["in_progress_at"] or now
            return
        outcome = job.plan.outcome
        answered = len(job.lines) if outcome == "completed" else job.plan.answered
        self.finish(job, outcome, len(job.lines) // 2 if answered is None else answered)

    def finish(self, job: FakeJob, status: str, answered: int) -> None:
        batch = job.batch
        now = int(time.time())
        batch.update(status=status, **{f"{status}_at": now})
        with self._lock:
            self.counts.by_status[status] += 1
        if status == "failed":
            problem = {"code": job.plan.fail_code, "line": None, "message": "fake failure"}
            batch["errors"] = batch["errors"] or {"object": "list", "data": [problem]}
            return
        job.outcomes = self.answer_lines(job, answered)
        answered_ok = sum(outcome.status_code == 200 for outcome in job.outcomes)
        counts = batch["request_counts"]
        counts.update(completed=answered_ok, failed=len(job.outcomes) - answered_ok)
        if job.provider == "openai":
            self.write_files(job, status)

    def write_files(self, job: FakeJob, status: str) -> None:
        """The OpenAI output and error files of an ended job's line outcomes."""
        batch = job.batch
        outputs: list[str] = []
        errors: list[str] = []
        for outcome in job.outcomes:
            record: dict[str, Any] = {
                "id": f"batch_req_{outcome.index}",
                "custom_id": outcome.custom_id,
            }
            if outcome.status_code is None:
                code = "batch_expired" if status == "expired" else "batch_cancelled"
                message = f"This request was not executed: the batch was {status}."
                error = {"code": code, "message": message}
                errors.append(json.dumps({**record, "response": None, "error": error}))
                continue
            response = {
                "status_code": outcome.status_code,
                "request_id": f"req_{outcome.index}",
                "body": outcome.payload,
            }
            (outputs if outcome.status_code == 200 else errors).append(
                json.dumps({**record, "response": response, "error": None})
            )
        if outputs:
            text = self.result_text(outputs, job.plan.malformed_lines)
            stored = self.store_file(text.encode(), "batch_output", "batch_output.jsonl")
            batch["output_file_id"] = (
                self.new_id("file") if job.plan.missing_output else stored["id"]
            )
        if errors:
            text = self.result_text(errors, 0)
            stored = self.store_file(text.encode(), "batch_output", "errors.jsonl")
            batch["error_file_id"] = stored["id"]

    def answer_lines(self, job: FakeJob, answered: int) -> list[LineOutcome]:
        """Each line's answer by the chat rules; lines from `answered` on never ran."""
        outcomes: list[LineOutcome] = []
        for index, line in enumerate(job.lines):
            code, payload = self.answer_line(line["body"]) if index < answered else (None, None)
            outcomes.append(LineOutcome(line["custom_id"], index, code, payload))
        return outcomes

    @classmethod
    def result_text(cls, lines: list[str], malformed: int) -> str:
        """Result lines as a provider writes them: the first `malformed` cut in half, in
        reverse input order (providers promise no order)."""
        lines = [cls.mangle(line) for line in lines[:malformed]] + lines[malformed:]
        return "\n".join(reversed(lines)) + "\n"

    @staticmethod
    def mangle(line: str) -> str:
        return line[: len(line) // 2]

    def job(self, batch_id: str) -> FakeJob | None:
        job = self._jobs.get(batch_id)
        if job is not None:
            self.advance(job)
        return job

    async def handle_retrieve(self, request: Request) -> Response:
        job = self.retrieve(request.path_params["batch_id"])
        return JSONResponse(job.batch) if job else error_body("No such Batch object", 404)

    async def handle_cancel(self, request: Request) -> Response:
        job = self.cancel(request.path_params["batch_id"])
        return JSONResponse(job.batch) if job else error_body("No such Batch object", 404)

    def cancel(self, batch_id: str) -> FakeJob | None:
        """Ask a job to stop (counted); None when there is no such job."""
        job = self._jobs.get(batch_id)
        if job is None:
            return None
        with self._lock:
            self.counts.cancels += 1
        if job.batch["status"] not in TERMINAL:
            job.cancel_requested = True
            job.batch.update(status="cancelling", cancelling_at=int(time.time()))
        return job

    def retrieve(self, batch_id: str) -> FakeJob | None:
        """A status check (counted, moves the job along its plan)."""
        with self._lock:
            self.counts.retrieves += 1
        self.polled.set()
        return self.job(batch_id)

    def list_page(self, provider: str, after: str | None, limit: int) -> tuple[list[FakeJob], bool]:
        """(a page of one provider's jobs, newest first, after the job `after`; whether more
        follow), counted."""
        with self._lock:
            self.counts.lists += 1
            jobs = [job for job in self._jobs.values() if job.provider == provider][::-1]
        ids = [job.batch["id"] for job in jobs]
        start = ids.index(after) + 1 if after in ids else 0
        page = jobs[start : start + limit]
        for job in page:
            self.advance(job)
        return page, start + limit < len(jobs)

    async def handle_list(self, request: Request) -> Response:
        """Newest first, paged by `after` (a batch id) and `limit` (1-100, default 20)."""
        after = request.query_params.get("after")
        limit = max(1, min(100, int(request.query_params.get("limit", 20))))
        page, has_more = self.list_page("openai", after, limit)
        data = [job.batch for job in page]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": has_more,
            }
        )

    async def handle_counts(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse(self.counts.to_json())

    async def handle_plan(self, request: Request) -> Response:
        self.plan([JobPlan(**spec) for spec in await request.json()])
        return JSONResponse({"ok": True})

    async def handle_release(self, request: Request) -> Response:
        self.release()
        return JSONResponse({"ok": True})
