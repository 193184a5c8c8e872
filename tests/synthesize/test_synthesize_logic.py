"""Stage 2 pure parts: reply schema, target checks with their reasons, near-duplicate removal."""

from __future__ import annotations

from tasks.dedup import find_near_duplicates, mark_near_duplicates
from tasks.sampling import ServerView, TaskSlot
from tasks.synthesize import SynthesisReply, ToolChoice, judge_reply, reply_format_for
from toucan.records import Server, Task, Tool


def view(name: str, tools: list[str]) -> ServerView:
    server = Server(
        server_id=f"s_{name}", name=name, source="fleet", transport="stdio", status="ok"
    )
    return ServerView(
        server=server,
        tools=tuple(
            Tool(tool_id=f"t_{name}_{t}", server_id=server.server_id, name=t, schema_hash="h")
            for t in tools
        ),
    )


CALC = view("Calculator", ["add", "multiply"])
NOTES = view("Notes", ["create_note"])


def slot(strategy: str = "single_server", num_tools: int = 1, servers=(CALC,)) -> TaskSlot:
    return TaskSlot(
        task_id="task_x",
        strategy=strategy,
        allocation="single",
        server_ids=tuple(v.server_id for v in servers),
        num_tools=num_tools,
        generator="g",
        seed=0,
        slot=0,
    )


def reply(*pairs: tuple[str, str], question: str = "How much is 17 plus 25 in total?"):
    return SynthesisReply(
        target_tools=[ToolChoice(server=s, tool=t) for s, t in pairs], question=question
    )


def test_the_reply_schema_offers_only_real_pairs_and_the_exact_count() -> None:
    response_format = reply_format_for(slot("multi_server", 2, (CALC, NOTES)), [CALC, NOTES])
    json_schema = response_format["json_schema"]["schema"]
    pairs = json_schema["$defs"]["ToolChoice"]["anyOf"]
    assert [
        (p["properties"]["server"]["const"], p["properties"]["tool"]["enum"]) for p in pairs
    ] == [("Calculator", ["add", "multiply"]), ("Notes", ["create_note"])]
    targets = json_schema["properties"]["target_tools"]
    assert (targets["minItems"], targets["maxItems"]) == (2, 2)
    assert list(json_schema["properties"]) == [
        "server_analysis",
        "cross_server_workflow",
        "target_tools",
        "question",
    ]


def test_a_valid_single_server_reply_passes() -> None:
    targets, reason, _ = judge_reply(reply(("Calculator", "add")), slot(), [CALC])
    assert reason is None
    assert [(t.server_id, t.tool) for t in targets] == [("s_Calculator", "add")]


def test_server_names_match_with_common_suffixes_and_case() -> None:
    targets, reason, _ = judge_reply(reply(("calculator MCP Server", "ADD")), slot(), [CALC])
    assert reason is None and targets[0].tool == "add"


def test_a_tool_that_does_not_exist_is_rejected_with_its_name() -> None:
    _, reason, details = judge_reply(reply(("Calculator", "teleport")), slot(), [CALC])
    assert reason == "target_tool_not_found"
    assert details["missing_tools"] == ["Calculator/teleport"]


def test_a_tool_named_on_the_wrong_server_is_not_found() -> None:
    _, reason, _ = judge_reply(reply(("Notes", "add")), slot(), [CALC])
    assert reason == "target_tool_not_found"


def test_a_repeated_tool_does_not_count_twice() -> None:
    _, reason, details = judge_reply(
        reply(("Calculator", "add"), ("Calculator", "add")), slot(num_tools=2), [CALC]
    )
    assert reason == "wrong_tool_count" and details["got_tools"] == 1


def test_a_multi_server_task_on_one_server_is_rejected() -> None:
    multi = slot("multi_server", 2, (CALC, NOTES))
    _, reason, _ = judge_reply(
        reply(("Calculator", "add"), ("Calculator", "multiply")), multi, [CALC, NOTES]
    )
    assert reason == "single_server_only"
    _, reason, _ = judge_reply(
        reply(("Calculator", "add"), ("Notes", "create_note")), multi, [CALC, NOTES]
    )
    assert reason is None


def test_refusals_and_stubs_are_rejected_but_polite_requests_are_not() -> None:
    def reason_for(question: str) -> str | None:
        return judge_reply(reply(("Calculator", "add"), question=question), slot(), [CALC])[1]

    assert reason_for("I'm sorry, I cannot write that question.") == "refusal"
    assert reason_for("Add?") == "question_too_short"
    assert reason_for("Could you please add 17 and 25 for my invoice?") is None
    assert reason_for("Please provide the sum of 17 and 25 for my invoice.") is None


def task(task_id: str, question: str, servers=("s1",), status="ok") -> Task:
    return Task(
        task_id=task_id,
        strategy="single_server",
        question=question,
        server_ids=list(servers),
        status=status,
    )


def test_near_duplicates_keep_the_first_of_each_pair() -> None:
    tasks = [
        task("t1", "What is the weather forecast for Lisbon tomorrow morning?"),
        task("t2", "What's the weather forecast for Lisbon tomorrow morning"),
        task("t3", "Convert 300 US dollars into euros at today's rate."),
    ]
    dropped = find_near_duplicates(tasks, 0.9)
    assert dropped == {"t2": "t1"}
    marked = mark_near_duplicates(dropped, tasks)
    assert [(t.task_id, t.status, t.reason, t.metadata["duplicate_of"]) for t in marked] == [
        ("t2", "rejected", "near_duplicate", "t1")
    ]


def test_a_short_question_contained_in_a_longer_one_is_not_a_duplicate() -> None:
    tasks = [
        task("t1", "What time is it in Osaka?"),
        task(
            "t2",
            "What time is it in Osaka when my flight from Lisbon lands at 9pm "
            "local time on Friday, and should I book a hotel?",
        ),
    ]
    assert find_near_duplicates(tasks, 0.9) == {}


def test_the_same_question_over_other_servers_is_another_task() -> None:
    tasks = [
        task("t1", "Summarise my notes about the quarterly budget", ("s1",)),
        task("t2", "Summarise my notes about the quarterly budget", ("s2",)),
        task("t3", "Summarise my notes about the quarterly budget", ("s1",), "rejected"),
    ]
    assert find_near_duplicates(tasks, 0.9) == {}
