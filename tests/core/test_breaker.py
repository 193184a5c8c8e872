"""The consecutive-failure counter both circuit breakers are built on (toucan/breaker.py):
one instance shared by batches on their own threads and loops."""

from __future__ import annotations

import asyncio
import pickle
import threading

from tasks.agent.breaker import ServerBreaker
from toucan.breaker import FailureStreaks, Paused
from toucan.llm.breaker import ModelBreaker

WAIT_S = 30.0  # generous: the box is shared


def test_failures_add_up_across_threads_and_a_success_resets_the_streak() -> None:
    breaker = FailureStreaks(threshold=5)
    breaker.record_failure("srv", "tool_timeout")
    breaker.record_success("srv")
    workers = [
        threading.Thread(target=lambda: breaker.record_failure("srv", "tool_timeout", "hung"))
        for _ in range(5)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    paused = breaker.paused("srv")
    assert paused is not None and paused.reason == "tool_timeout"
    assert paused.detail.startswith("5 failures in a row; last: hung")
    assert breaker.paused("other") is None


def test_the_failure_that_pauses_says_so_and_a_pause_is_final() -> None:
    breaker = FailureStreaks(threshold=2)
    assert breaker.record_failure("a", "x") is False
    assert breaker.record_failure("a", "y") is True
    assert breaker.record_failure("a", "z") is False
    breaker.record_success("a")
    assert breaker.paused("a") == Paused("a", "y", "2 failures in a row; last: ")


def test_without_a_threshold_nothing_is_paused() -> None:
    breaker = FailureStreaks(threshold=None)
    for _ in range(50):
        breaker.record_failure("a", "x")
    assert breaker.paused("a") is None and breaker.failures["a"] == 50


def test_a_pause_on_another_thread_ends_the_work_in_flight_at_once() -> None:
    breaker = FailureStreaks(threshold=1)
    waiting = threading.Event()
    outcome: list[object] = []

    async def hang_until_paused() -> None:
        async def never() -> str:
            waiting.set()
            await asyncio.sleep(3600)
            return "answered"

        outcome.append(await breaker.unless_paused("srv", never()))

    other = threading.Thread(target=lambda: asyncio.run(hang_until_paused()))
    other.start()
    assert waiting.wait(WAIT_S)
    breaker.record_failure("srv", "tool_timeout")
    other.join(WAIT_S)
    assert not other.is_alive()
    assert outcome == [breaker.paused("srv")]


def test_work_that_ends_first_gives_its_result_or_its_error() -> None:
    breaker = FailureStreaks(threshold=1)

    async def run() -> tuple[object, str]:
        async def answer() -> str:
            return "ok"

        async def fail() -> str:
            raise ValueError("tool broke")

        done = await breaker.unless_paused("srv", answer())
        try:
            await breaker.unless_paused("srv", fail())
        except ValueError as error:
            return done, str(error)
        return done, "no error"

    assert asyncio.run(run()) == ("ok", "tool broke")
    assert breaker._waiters._futures == []  # nothing left parked once the work is done


def test_both_breakers_are_the_same_counter_and_survive_a_pickle() -> None:
    for breaker in (ModelBreaker(threshold=2), ServerBreaker(threshold=2)):
        breaker.record_failure("a", "x")
        breaker.record_failure("b", "x")
        breaker.record_failure("b", "x")
        copy = pickle.loads(pickle.dumps(breaker))
        assert copy.failures == {"a": 1, "b": 2} and copy.paused("b") == breaker.paused("b")
        copy.record_failure("a", "x")
        assert copy.paused("a") is not None and breaker.paused("a") is None
    assert ModelBreaker(1).noun != ServerBreaker(1).noun
