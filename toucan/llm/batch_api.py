"""Provider batch jobs over HTTP: the OpenAI Batch API (`/v1/files` + `/v1/batches`), and the
`BatchApi` interface it shares with Anthropic Message Batches (toucan/llm/batch_anthropic.py).

Served by OpenAI and by OpenAI-compatible servers that implement it (a deployment says so with
`supports_batch: true`). Shapes: OpenAI API reference, "Files" and "Batch" (the openai SDK's
`types/batch.py`): a job is created from an uploaded JSONL file of request lines, moves through
validating -> in_progress -> finalizing -> completed (or failed / expired / cancelling ->
cancelled) and names an output file and an error file of result lines.

Why not LiteLLM's `acreate_file` / `acreate_batch` / `aretrieve_batch` / `afile_content`: they
work against a custom `api_base` offline (tried with litellm 1.110.2 against
tests/fake_llm.py), but build a new OpenAI client per call and leave its connection open (an
"unclosed transport" ResourceWarning per call), cover the OpenAI-compatible providers only by
pretending to be `openai`, and do not create Anthropic Message Batches at all (their Anthropic
support retrieves and downloads only: toucan/llm/batch_anthropic.py posts those itself). The endpoints are six small HTTP calls; here they share
the direct transport's pooled session and its error classes, so a 5xx, a timeout or a broken
connection is retried by the same rules as a chat call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any, Literal, Protocol

import aiohttp
from pydantic import BaseModel, Field

from toucan.config import ModelDeployment
from toucan.llm.batch_lines import CHAT_URL, LineResult, build_line, read_result_line
from toucan.llm.direct import DirectTransport, Endpoint, decode_json, to_reply_from_json
from toucan.llm.errors import HttpStatusError
from toucan.llm.replies import LlmReply
from toucan.records import BatchJob

COMPLETION_WINDOW = "24h"  # the only window OpenAI accepts (batch create, completion_window)
UPLOAD_TIMEOUT_S = 600.0  # an input file may be up to 200 MB
FIND_SLACK_S = 300  # clock skew between us and the provider when `find` stops paging
JOB_KEY_FIELD = "toucan_job_key"  # batch metadata naming our record of the job
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
OPENAI_HOST = "api.openai.com"
BatchProvider = Literal["openai", "anthropic"]


def batch_provider(deployment: ModelDeployment, route_to_local: bool) -> BatchProvider | None:
    """Whose batch API takes the deployment's jobs; None when it has none.

    `supports_batch` decides when it is set (True on an OpenAI-compatible server means it serves
    /v1/files and /v1/batches); left unset, OpenAI itself (an `openai/` model without an
    api_base of its own) and Anthropic have one, other providers none. The embedded model of
    the `local` profile never has one.
    """
    if route_to_local or deployment.supports_batch is False:
        return None
    from toucan.llm.providers import load_litellm  # only a stage that may batch asks

    try:
        _, provider, _, _ = load_litellm().get_llm_provider(
            deployment.model, api_base=deployment.api_base
        )
    except Exception:  # LiteLLM does not know the provider: only the config can say
        provider = ""
    if provider == "anthropic":
        return "anthropic"
    own_base = deployment.api_base is not None and OPENAI_HOST not in deployment.api_base
    if provider == "openai" and not own_base:
        return "openai"
    return "openai" if deployment.supports_batch else None


def has_batch_api(deployment: ModelDeployment, route_to_local: bool) -> bool:
    """Whether toucan can send the deployment's requests as batch jobs: Anthropic (Message
    Batches, always posted by toucan: LiteLLM cannot create them), or the OpenAI Batch API of
    a deployment toucan posts to directly (not through LiteLLM)."""
    provider = batch_provider(deployment, route_to_local)
    if provider == "anthropic":
        return True
    return provider == "openai" and deployment.transport != "litellm"


class BatchState(BaseModel):
    """A provider's view of one job, in the OpenAI Batch object's terms."""

    job_id: str
    status: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    created_at: int = 0  # unix seconds
    errors: list[dict[str, Any]] = Field(default_factory=list)  # job-level (e.g. validation)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


class ResultFiles(BaseModel):
    """The result lines of an ended job: output and error file contents (None = none named),
    and whether a named output file could not be had (gone, or never written)."""

    output: bytes | None = None
    errors: bytes | None = None
    output_missing: bool = False


def read_batch(data: dict[str, Any]) -> BatchState:
    """An OpenAI Batch object as a BatchState."""
    counts = data.get("request_counts") or {}
    errors = (data.get("errors") or {}).get("data") or []
    return BatchState(
        job_id=str(data["id"]),
        status=str(data.get("status") or "validating"),
        input_file_id=data.get("input_file_id"),
        output_file_id=data.get("output_file_id"),
        error_file_id=data.get("error_file_id"),
        total=counts.get("total") or 0,
        completed=counts.get("completed") or 0,
        failed=counts.get("failed") or 0,
        created_at=data.get("created_at") or 0,
        errors=[error for error in errors if isinstance(error, dict)],
        metadata=data.get("metadata") or {},
    )


class ListedPages(BaseModel):
    """How a provider lists its jobs, newest first: the page size and how many pages `find`
    reads at most, the cursor parameter (OpenAI `after`, Anthropic `after_id`) and the reader
    of one listed job."""

    path: str
    page_size: int
    pages_max: int
    cursor: str


async def listed_newest_first(
    call: Any, pages: ListedPages, read: Any, since: float
) -> AsyncIterator[BatchState]:
    """The provider's jobs, newest first, page by page, until none is left, `pages.pages_max`
    pages were read, or a page ends before `since` - FIND_SLACK_S (epoch seconds). `call` is
    the API's `call(method, path, params=...)`; `read` turns one listed job into a BatchState."""
    after: str | None = None
    for _ in range(pages.pages_max):
        params = {"limit": str(pages.page_size), **({pages.cursor: after} if after else {})}
        page = decode_json(await call("GET", pages.path, params=params))
        states = [read(item) for item in page.get("data") or []]
        for state in states:
            yield state
        if not page.get("has_more") or not states:
            return
        if states[-1].created_at and states[-1].created_at < since - FIND_SLACK_S:
            return
        after = page.get("last_id") or states[-1].job_id


class BatchApi(Protocol):
    """What `JobDriver` and `BatchRunner` ask of a provider's batch API. Calls raise the direct
    transport's errors (HttpStatusError, ConnectionTrouble, TimeoutError)."""

    provider: BatchProvider
    max_retries: int  # of each call, on transient trouble (the deployment's)

    def build_line(self, custom_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """One request line around an online request body (`LlmRouter.build_request`)."""
        ...

    async def submit(self, job_key: str, lines: bytes) -> BatchState: ...
    async def retrieve(self, job_id: str) -> BatchState: ...
    async def cancel(self, job_id: str) -> BatchState: ...

    async def find(self, job: BatchJob, taken: set[str]) -> BatchState | None:
        """The job a run created but died before recording; never one of the `taken` ids."""
        ...

    async def results(self, state: BatchState) -> ResultFiles: ...

    def read_line(self, value: Any) -> LineResult | None:
        """One decoded result line (None: it names no custom id)."""
        ...

    def to_reply(
        self, body: dict[str, Any], encoded: bytes, deployment: str, model: str, latency_ms: float
    ) -> LlmReply:
        """A succeeded line's body as the online path's LlmReply (`encoded`: the request line,
        b"" when unknown). Raises ConnectionTrouble, ValueError or KeyError when unreadable."""
        ...


# `GET /v1/batches`: pages of 1-100 jobs; 20 pages back is far more than a run submits
OPENAI_LIST = ListedPages(path="/batches", page_size=100, pages_max=20, cursor="after")


class OpenAiBatchApi:
    """One deployment's Batch API: its endpoint's base url, key and model id."""

    provider: BatchProvider = "openai"

    def __init__(self, transport: DirectTransport, endpoint: Endpoint, max_retries: int) -> None:
        self.transport = transport
        self.endpoint = endpoint
        self.max_retries = max_retries  # of each call, on transient trouble (the deployment's)
        # aiohttp sets the content type of JSON and multipart bodies itself
        self.headers = {k: v for k, v in endpoint.headers.items() if k != "content-type"}

    async def call(self, method: str, path: str, **request: Any) -> bytes:
        """One request below the API root; raises the direct transport's errors."""
        timeout_s = request.pop("timeout_s", self.endpoint.timeout_s)
        url = f"{self.endpoint.base}{path}"
        return await self.transport.send(
            method, url, headers=self.headers, timeout_s=timeout_s, **request
        )

    read_line = staticmethod(read_result_line)

    def build_line(self, custom_id: str, request: dict[str, Any]) -> dict[str, Any]:
        return build_line(custom_id, self.endpoint.model, request)

    def to_reply(
        self, body: dict[str, Any], encoded: bytes, deployment: str, model: str, latency_ms: float
    ) -> LlmReply:
        return to_reply_from_json(body, deployment, model, latency_ms)

    async def submit(self, job_key: str, lines: bytes) -> BatchState:
        """Upload the request lines (purpose `batch`) and create the job, tagged with our
        `job_key` in its metadata so that `find` can tell it apart later."""
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", lines, filename=f"{job_key}.jsonl", content_type="application/jsonl")
        uploaded = decode_json(
            await self.call("POST", "/files", data=form, timeout_s=UPLOAD_TIMEOUT_S)
        )
        body = {
            "input_file_id": uploaded["id"],
            "endpoint": CHAT_URL,
            "completion_window": COMPLETION_WINDOW,
            "metadata": {JOB_KEY_FIELD: job_key},
        }
        return read_batch(decode_json(await self.call("POST", "/batches", json=body)))

    async def retrieve(self, job_id: str) -> BatchState:
        """The job's current state (GET /batches/{id})."""
        return read_batch(decode_json(await self.call("GET", f"/batches/{job_id}")))

    async def cancel(self, job_id: str) -> BatchState:
        """Ask the provider to stop the job; it ends as `cancelled`, keeping what it answered."""
        return read_batch(decode_json(await self.call("POST", f"/batches/{job_id}/cancel")))

    async def find(self, job: BatchJob, taken: set[str]) -> BatchState | None:
        """The job created for `job` (a process killed between creating a job and recording
        its id), told by its key in the metadata, looking back through jobs newest first to
        when it was recorded."""
        since = job.submitted_at.replace(tzinfo=UTC).timestamp()  # the store keeps naive UTC
        async for state in listed_newest_first(self.call, OPENAI_LIST, read_batch, since):
            if state.metadata.get(JOB_KEY_FIELD) == job.job_key:
                return state
        return None

    async def results(self, state: BatchState) -> ResultFiles:
        """The ended job's output and error files. A named output file that is gone, or no
        output file although the job counts completed requests, is `output_missing`."""
        output = await self.download(state.output_file_id)
        errors = await self.download(state.error_file_id)
        named_but_gone = state.output_file_id is not None and output is None
        never_written = state.output_file_id is None and state.completed > 0
        return ResultFiles(
            output=output, errors=errors, output_missing=named_but_gone or never_written
        )

    async def download(self, file_id: str | None) -> bytes | None:
        """A file's content; None when no file is named or the named one is gone (404)."""
        if not file_id:
            return None
        try:
            return await self.call("GET", f"/files/{file_id}/content", timeout_s=UPLOAD_TIMEOUT_S)
        except HttpStatusError as error:
            if error.status_code == 404:
                return None
            raise
