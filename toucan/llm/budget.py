"""The run's spending ledger: reserve before a call, settle after it, refuse what would cross a cap.

One `Budget` per run, shared by every router of the run (each batch runs its own router on its
own event loop, in its own thread), so the state is guarded by a thread lock. A call reserves
the most it can cost (prompt tokens x input price + max_tokens x output price: the router's
estimate, toucan/llm/prices.py); the reply's usage settles it at its real cost, a failure
releases it (providers bill no failed request). Caps: `budget.usd` for the run, and per stage
and per deployment (toucan/config.py `BudgetConfig`); the issue asking for them is issue 13.

When a reservation would cross a cap while other calls still hold reservations, it waits for
them to settle (they nearly always cost less than reserved, which frees room) and looks again;
it is refused (`BudgetExhausted`) only when even all of them settling at $0 would leave no
room. So the run stops within one call's reservation of the cap, never above it while each
reply costs at most its reservation, and calls already in flight always finish.

A ledger pickled into another process (a Dask worker) is a copy: it starts from what this one
knows and has no holds. The copy's calls come back as the batch's `llm_call` events, which the
owner adds with `absorb` (and its refusals with `note_refusal`); each scope counts the larger
of what it settled and what was absorbed, so calls settled here and reported again are never
counted twice.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from toucan.config import BudgetConfig, ModelsConfig
from toucan.errors import BudgetExhausted, ConfigError
from toucan.llm.prices import unpriced_deployments
from toucan.llm.waiters import LoopWaiters


@dataclass(frozen=True)
class Reservation:
    """Dollars held for one call until it is settled or released."""

    stage: str
    deployment: str
    usd: float


class BudgetSpend(BaseModel):
    """What a run has spent (settled calls) and holds (calls in flight), US dollars."""

    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    calls: int = 0  # settled calls that were answered
    by_stage: dict[str, float] = {}
    by_deployment: dict[str, float] = {}


@dataclass(frozen=True)
class Cap:
    """One cap a reservation must fit: which scope, its config key and its dollars."""

    scope: str  # "run" | "stage" | "deployment"
    key: str  # the stage or deployment name; "" for the run
    setting: str  # where it is configured, e.g. "budget.per_stage.trajectories"
    usd: float


class Budget:
    """Thread-safe spending ledger of one run (module docstring)."""

    def __init__(self, config: BudgetConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._waiters = LoopWaiters()
        self._spent: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._held: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._holders: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._reported: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._refused: dict[tuple[str, str], Cap] = {}  # caps a reservation could not fit
        self._calls = 0

    def __getstate__(self) -> dict[str, Any]:
        """A copy for another process: what is spent so far as its own settled spend (its
        calls then add to it), the refusals; no lock, waiters, holds or reports."""
        with self._lock:
            spent = defaultdict(float, {s: self._used(s) for s in {*self._spent, *self._reported}})
            state = {**vars(self), "_spent": spent, "_refused": dict(self._refused)}
        for empty in ("_held", "_reported"):
            state[empty] = defaultdict(float)
        state["_holders"] = defaultdict(int)
        del state["_lock"], state["_waiters"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()
        self._waiters = LoopWaiters()

    def caps_for(self, stage: str, deployment: str) -> list[Cap]:
        """The caps a call of this stage on this deployment counts against."""
        config = self.config
        caps = [] if config.usd is None else [Cap("run", "", "budget.usd", config.usd)]
        if (cap := config.per_stage.get(stage)) is not None:
            caps.append(Cap("stage", stage, f"budget.per_stage.{stage}", cap))
        if (cap := config.per_deployment.get(deployment)) is not None:
            caps.append(Cap("deployment", deployment, f"budget.per_deployment.{deployment}", cap))
        return caps

    async def reserve(self, stage: str, deployment: str, usd: float) -> Reservation:
        """Hold `usd` for one call. Waits while calls in flight may still free enough room;
        raises BudgetExhausted (naming the cap, what was spent and how to continue) when none
        can."""
        reservation = Reservation(stage, deployment, max(0.0, usd))
        caps = self.caps_for(stage, deployment)
        while True:
            with self._lock:
                if self._take(reservation, caps):
                    return reservation
                parked = self._waiters.park()
            await self._waiters.wait(parked)

    def try_reserve(self, stage: str, deployment: str, usd: float) -> Reservation | None:
        """Hold `usd` for one line of a provider batch job if it fits now, never waiting: the
        job's earlier lines hold their reservations until the whole job ends, so waiting for
        them here would wait for ever. None when it fits only once calls in flight settle;
        raises BudgetExhausted when it cannot fit even if they all settled at $0."""
        reservation = Reservation(stage, deployment, max(0.0, usd))
        caps = self.caps_for(stage, deployment)
        with self._lock:
            return reservation if self._take(reservation, caps) else None

    def settle(self, reservation: Reservation, usd: float) -> None:
        """The call was answered and cost `usd` (from its usage): spend it, free the hold."""
        with self._lock:
            self._hold(reservation, -1)
            for scope in self._scopes(reservation):
                self._spent[scope] += usd
            self._calls += 1
        self._waiters.wake_all()

    def release(self, reservation: Reservation) -> None:
        """The call failed or was cancelled: nothing was billed, free the hold."""
        with self._lock:
            self._hold(reservation, -1)
        self._waiters.wake_all()

    def absorb(self, stage: str, deployment: str, usd: float) -> None:
        """A paid call reported by a batch's events (module docstring: copies in other
        processes). Never counted on top of the same call settled here."""
        with self._lock:
            for scope in self._scopes(Reservation(stage, deployment, usd)):
                self._reported[scope] += usd
        self._waiters.wake_all()

    def note_refusal(self, stage: str, deployment: str, message: str) -> None:
        """A reservation a copy elsewhere refused (its `budget_exhausted` event's message,
        which starts with the cap's setting: `_exhausted`): that cap has no room left here
        either."""
        for cap in self.caps_for(stage, deployment):
            if message.startswith(f"{cap.setting} = "):
                with self._lock:
                    self._refused[(cap.scope, cap.key)] = cap

    def reached(self, stage: str, deployment: str | None = None) -> Cap | None:
        """The cap that leaves no room for another call of this stage (on `deployment`, when
        given, its own cap only): one that refused a reservation, or whose spend reached it."""
        caps = self.caps_for(stage, deployment or "")
        wanted = [c for c in caps if (c.scope == "deployment") == (deployment is not None)]
        with self._lock:
            for cap in wanted:
                scope = (cap.scope, cap.key)
                if scope in self._refused or self._used(scope) >= cap.usd:
                    return cap
        return None

    def describe(self, cap: Cap) -> str:
        """`<setting> = $cap reached: $spent spent`, for a message saying why a stage stopped."""
        with self._lock:
            used = self._used((cap.scope, cap.key))
        return f"{cap.setting} = ${cap.usd:.4f} reached: ${used:.4f} spent"

    def spend(self) -> BudgetSpend:
        """Spent and held so far, in total, per stage and per deployment."""
        with self._lock:
            scopes = set(self._spent) | set(self._reported)
            by_scope = {
                kind: {key: self._used((scope, key)) for scope, key in scopes if scope == kind}
                for kind in ("stage", "deployment")
            }
            return BudgetSpend(
                spent_usd=self._used(("run", "")),
                reserved_usd=self._held[("run", "")],
                calls=self._calls,
                by_stage=by_scope["stage"],
                by_deployment=by_scope["deployment"],
            )

    # -- under the lock -----------------------------------------------------------------

    def _used(self, scope: tuple[str, str]) -> float:
        """Spent in a scope: settled here, or reported by copies elsewhere if that is more."""
        return max(self._spent[scope], self._reported[scope])

    def _take(self, reservation: Reservation, caps: list[Cap]) -> bool:
        """Hold the reservation when every cap has room (True); False when calls in flight
        may still free enough; raises BudgetExhausted when none can."""
        blocking = next((c for c in caps if not self._fits(c, reservation.usd)), None)
        if blocking is None:
            self._hold(reservation, +1)
            return True
        scope = (blocking.scope, blocking.key)
        if not self._holders[scope] or self._used(scope) + reservation.usd > blocking.usd:
            raise self._exhausted(blocking, reservation.usd)
        return False

    def _fits(self, cap: Cap, usd: float) -> bool:
        scope = (cap.scope, cap.key)
        return self._used(scope) + self._held[scope] + usd <= cap.usd

    def _hold(self, reservation: Reservation, step: int) -> None:
        """Take (+1) or give back (-1) a reservation in each of its scopes; a scope nobody
        holds is exactly $0 again (no rounding left over to block a reservation forever)."""
        for scope in self._scopes(reservation):
            self._holders[scope] += step
            self._held[scope] += step * reservation.usd
            if self._holders[scope] <= 0:
                self._holders[scope], self._held[scope] = 0, 0.0

    @staticmethod
    def _scopes(reservation: Reservation) -> tuple[tuple[str, str], ...]:
        return (("run", ""), ("stage", reservation.stage), ("deployment", reservation.deployment))

    def _exhausted(self, cap: Cap, usd: float) -> BudgetExhausted:
        scope = (cap.scope, cap.key)
        self._refused[scope] = cap
        return BudgetExhausted(
            f"{cap.setting} = ${cap.usd:.4f} reached: ${self._used(scope):.4f} spent, "
            f"${self._held[scope]:.4f} held by calls in flight, and the next call may cost "
            f"${usd:.4f}; raise {cap.setting} and run again to continue (replies already paid "
            "for come from the cache)",
            scope=cap.scope,
        )


def check_budget_prices(
    config: BudgetConfig, models: ModelsConfig, deployments: Iterable[str] | None = None
) -> None:
    """Refuse a capped run with a deployment whose price is unknown (issue 13: never count an
    unknown price as $0), unless `budget.allow_unpriced`. `deployments` limits the check to
    those the run uses (default: every configured one). Raises ConfigError, reason
    `unpriced_deployment`, naming them and both ways out."""
    if not config.capped or config.allow_unpriced:
        return
    unpriced = unpriced_deployments(models)
    if deployments is not None:
        wanted = set(deployments)
        unpriced = [name for name in unpriced if name in wanted]
    if unpriced:
        raise ConfigError(
            f"a budget cap is set but no price is known for {', '.join(unpriced)}: set their "
            "input_cost_per_token and output_cost_per_token under models, or set "
            "budget.allow_unpriced: true to count their calls as $0",
            reason="unpriced_deployment",
        )
