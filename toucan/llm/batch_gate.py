"""GatedRouter: a router that sends its units of work's requests as provider batch jobs.

A single-call stage in batch mode (flows/runner.py decides once per stage run) builds each of
its batches' routers as a GatedRouter; the stage's own code is unchanged. Each unit of work
still asks `complete` (through `complete_structured`) as online; past the reply cache
(`LlmRouter.answer`, the one method the gate overrides) it holds the unit's first request
until every unit in flight is either held or finished. Then the held requests go
to the BatchRunner (toucan/llm/batch_runner.py: jobs recorded before they are sent, polled,
resumed after a kill, never sent twice) and each unit gets its reply, or its error, back where
it waited: the reply is parsed, checked, repaired and written by the same code as online. A
unit's later requests (the structured-output repair) go online, and so do the requests whose
deployment has no batch API (with a log line).

Budget: a line reserves its most possible cost at the batch price before its job is sent.
Lines are admitted without waiting (`Budget.try_reserve`: the job's own lines hold their
reservations until the whole job ends, so waiting on them would never end); those that do not
fit yet go in a later job, once the earlier one settled; a line that cannot fit at all fails
as `budget_exhausted`, unsent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from toucan.config import ModelsConfig
from toucan.errors import BudgetExhausted, LlmError
from toucan.llm.batch_items import BatchItem, Outcome
from toucan.llm.batch_ledger import BatchLedger
from toucan.llm.batch_runner import BatchRunner
from toucan.llm.budget import Reservation
from toucan.llm.replies import CallMeta, LlmReply, LlmRequest
from toucan.llm.router import LlmRouter

logger = logging.getLogger(__name__)


@dataclass
class Held:
    """One unit of work's request waiting at the gate, and where its answer goes."""

    target: str
    item: BatchItem
    meta: CallMeta
    answer: asyncio.Future[LlmReply]

    def deliver(self, outcome: Outcome) -> None:
        if self.answer.done():
            return
        if isinstance(outcome, LlmError):
            self.answer.set_exception(outcome)
        else:
            self.answer.set_result(outcome)


class GatedRouter(LlmRouter):
    """An LlmRouter whose units of work's first requests go out as provider batch jobs of
    one stage run (module docstring). Lives on one event loop, as every router."""

    def __init__(
        self,
        models: ModelsConfig,
        *,
        ledger: BatchLedger,
        run_id: str,
        stage: str,
        **router_args: Any,
    ) -> None:
        """`router_args`: those of LlmRouter (cache, budget, breaker, ...)."""
        super().__init__(models, **router_args)
        self.stage = stage
        self.jobs = BatchRunner(self, ledger, run_id=run_id, stage=stage)
        self.active = 0  # units of work in flight
        self.held: list[Held] = []
        self.asked: set[str] = set()  # items whose first request came to the gate
        self.sending: set[asyncio.Task[None]] = set()

    def expect(self, units: int) -> None:
        """`units` units of work are about to run, all at once. Counted before any starts:
        counted as each starts, the first would find itself alone and go in a job alone."""
        self.active += units

    @contextlib.contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """Around one expected unit of work: the gate opens once every unit still expected
        waits at it."""
        try:
            yield
        finally:
            self.active -= 1
            self.open_when_all_wait()

    async def answer(self, target: str, request: LlmRequest, meta: CallMeta) -> LlmReply:
        """As LlmRouter.answer (the cache was asked before); a unit of work's first request
        waits for the batch job that answers it (raising its LlmError as online would:
        `batch_*` reasons included)."""
        item_id = meta.item_id
        if item_id is None or item_id in self.asked or not self.active:
            return await super().answer(target, request, meta)
        self.asked.add(item_id)
        item = BatchItem(item_id=item_id, server_id=meta.server_id, **request._asdict())
        held = Held(target, item, meta, asyncio.get_running_loop().create_future())
        self.held.append(held)
        self.open_when_all_wait()
        return await held.answer

    def open_when_all_wait(self) -> None:
        """Send what is held once no unit in flight can add a request to it."""
        if not self.held or len(self.held) < self.active:
            return
        held, self.held = self.held, []
        task = asyncio.get_running_loop().create_task(self.send(held))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def send(self, held: list[Held]) -> None:
        """Every held request answered: batchable ones by jobs, the rest online. Whatever goes
        wrong here is every waiting unit's error, never a unit left waiting."""
        try:
            by_target: defaultdict[str, list[Held]] = defaultdict(list)
            for one in held:
                by_target[one.target].append(one)
            await asyncio.gather(*(self.send_for(t, group) for t, group in by_target.items()))
        except asyncio.CancelledError:
            for one in held:
                one.answer.cancel()
            raise
        except Exception as error:  # the gate's edge: the units turn it into error rows
            logger.exception("%s: sending provider batch jobs failed", self.stage)
            for one in held:
                if not one.answer.done():
                    one.answer.set_exception(error)

    async def send_for(self, target: str, held: list[Held]) -> None:
        by_id = {one.item.item_id: one for one in held}
        batchable, online = self.jobs.split(target, [one.item for one in held])
        if online:
            names = Counter(self.jobs.deployment_for(target, item) for item in online)
            logger.info(
                "%s: %d requests go online: %s has no batch API",
                self.stage,
                len(online),
                ", ".join(sorted(names)),
            )
        await asyncio.gather(
            self.send_in_jobs(target, [by_id[item.item_id] for item in batchable]),
            *(self.send_online(by_id[item.item_id]) for item in online),
        )

    async def send_online(self, held: Held) -> None:
        try:
            reply = await LlmRouter.answer(self, held.target, held.item.request(), held.meta)
        except LlmError as error:
            held.deliver(error)
        else:
            held.deliver(reply)

    async def send_in_jobs(self, target: str, held: list[Held]) -> None:
        """Jobs of the lines the budget admits, one round after the other (module docstring)."""
        waiting = held
        while waiting:
            admitted, waiting = await self.admit(target, waiting)
            if not admitted:
                continue
            outcomes = await self.jobs.run(target, [one.item for one, _ in admitted])
            for one, reservation in admitted:
                outcome = outcomes.get(one.item.item_id) or LlmError(
                    f"{target}: no outcome for {one.item.item_id}", reason="batch_missing_result"
                )
                paid = outcome if isinstance(outcome, LlmReply) and not outcome.cached else None
                self.settle(reservation, paid.cost_usd if paid is not None else None)
                one.deliver(outcome)  # cached by `complete` when asked to, as online

    async def admit(
        self, target: str, waiting: list[Held]
    ) -> tuple[list[tuple[Held, Reservation | None]], list[Held]]:
        """(lines admitted into the next job with their reservations, lines left for a later
        one). A line no cap has room for is answered here with its BudgetExhausted."""
        if self.budget is None:
            return [(one, None) for one in waiting], []
        admitted: list[tuple[Held, Reservation | None]] = []
        for index, one in enumerate(waiting):
            name = self.jobs.deployment_for(target, one.item)
            request = self.build_request(name, one.item.request())
            most = self.most_cost(name, request, self.jobs.prices[name])
            meta = self.jobs.meta(one.item.item_id, one.item.server_id)
            try:
                if admitted:
                    reservation = self.budget.try_reserve(self.stage, name, most)
                else:  # nothing of ours is held: waiting frees only others' holds
                    reservation = await self.budget.reserve(self.stage, name, most)
            except BudgetExhausted as error:
                self.record_event(meta, name, status="error", error=error)
                one.deliver(error)
                continue
            if reservation is None:
                return admitted, waiting[index:]
            admitted.append((one, reservation))
        return admitted, []
