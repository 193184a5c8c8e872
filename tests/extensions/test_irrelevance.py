"""Extension 1: pairing kept tasks with unrelated servers, and the irrelevance filter rules."""

from __future__ import annotations

import asyncio

from flows.runner import run_stage_async
from tasks.irrelevance import pair_task
from tasks.trajectory_rules import evaluate_rules
from tests.trajectories.helpers import ok_server
from toucan.config import load_settings
from toucan.ids import make_id
from toucan.records import Server, TargetTool, Task, TaskRating, Trajectory
from toucan.store import Store

DOMAINS = {
    "weather": ("Weather", []),
    "forecast": ("Travel & Maps", ["Weather"]),  # overlaps through a secondary domain
    "notes": ("File Management", []),
    "crypto": ("Cryptocurrency & Blockchain", []),
    "games": ("Gaming", []),
    "unlabelled": (None, []),
}


def servers() -> dict[str, Server]:
    return {
        f"srv_{name}": ok_server(
            f"srv_{name}", name, domain=domain, secondary_domains=secondary, tool_count=2
        )
        for name, (domain, secondary) in DOMAINS.items()
    }


def weather_task(task_id: str = "task_w") -> Task:
    return Task(
        task_id=task_id,
        strategy="single_server",
        question="Rain in Oslo tomorrow?",
        target_tools=[TargetTool(server_id="srv_weather", server="weather", tool="forecast")],
        server_ids=["srv_weather"],
        generator="Gen",
    )


def test_a_task_is_never_paired_with_a_server_whose_domains_overlap_its_own():
    fleet = servers()
    for seed in range(30):
        (row,) = pair_task(weather_task(), fleet, per_task=1, seed=seed)
        assert row.status == "ok"
        assert row.server_ids[0] in {"srv_notes", "srv_crypto", "srv_games"}
        assert (row.kind, row.parent_id, row.question) == (
            "irrelevant",
            "task_w",
            "Rain in Oslo tomorrow?",
        )
    rows = pair_task(weather_task(), fleet, per_task=5, seed=1)
    assert len(rows) == 3 and len({r.task_id for r in rows}) == 3


def test_pairing_is_a_seeded_shuffle():
    fleet = servers()
    picks = {pair_task(weather_task(f"t{i}"), fleet, 1, seed=7)[0].server_ids[0] for i in range(20)}
    assert len(picks) > 1  # different tasks land on different servers
    again = [pair_task(weather_task(), fleet, 2, 3)[i].server_ids for i in range(2)]
    assert again == [pair_task(weather_task(), fleet, 2, 3)[i].server_ids for i in range(2)]


def test_no_unrelated_server_gives_a_rejected_row_with_a_reason():
    fleet = {k: v for k, v in servers().items() if k in ("srv_weather", "srv_forecast")}
    (row,) = pair_task(weather_task(), fleet, 1, 0)
    assert (row.status, row.reason) == ("rejected", "no_unrelated_server")
    unlabelled = weather_task().model_copy(update={"server_ids": ["srv_unlabelled"]})
    (row,) = pair_task(unlabelled, servers(), 1, 0)
    assert row.reason == "task_domain_unknown"


def test_the_flow_writes_pairs_once_for_kept_tasks_only(tmp_path):
    store = Store(tmp_path / "toucan.duckdb")
    store.insert(list(servers().values()))
    kept, dropped = weather_task("task_kept"), weather_task("task_dropped")
    store.insert([kept, dropped])
    store.insert(
        [
            TaskRating(rating_id=make_id("r", "k"), task_id="task_kept", judge="J", keep=True),
            TaskRating(rating_id=make_id("r", "d"), task_id="task_dropped", judge="J", keep=False),
        ]
    )
    settings = load_settings(profile="local")
    first = asyncio.run(run_stage_async("irrelevance", settings, store))
    assert (first.kept_tasks, first.created) == (1, 1)
    second = asyncio.run(run_stage_async("irrelevance", settings, store))
    assert (second.already_done, second.created) == (1, 0)
    (row,) = store.select(Task, "kind = 'irrelevant'")
    assert row.parent_id == "task_kept" and row.run_id == first.run_id


def test_the_trajectory_filter_fails_a_tool_call_on_an_irrelevant_pair():
    fleet = servers()
    (pair,) = pair_task(weather_task(), fleet, 1, 0)

    def trajectory(messages, calls):
        return Trajectory(
            trajectory_id="t",
            task_id=pair.task_id,
            kind="irrelevant",
            teacher="T",
            messages=messages,
            tool_calls=calls,
            stop_reason="final_answer",
        )

    declined = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "My tools cannot check the weather."},
    ]
    called = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c", "function": {"name": "notes-write", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
        {"role": "assistant", "content": "Done."},
    ]
    flags, _ = evaluate_rules(trajectory(declined, 0), pair, markers=[], secrets=[])
    assert not flags["tool_called_on_irrelevant"] and not flags["no_tool_call"]
    flags, _ = evaluate_rules(trajectory(called, 1), pair, markers=[], secrets=[])
    assert flags["tool_called_on_irrelevant"]
