"""The offline model's rules and the calculator's safety, as plain functions."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from tests.support import CountingExecutor
from threadline.agent.graphs import open_graph_builder
from threadline.agent.offline_model import OfflineChatModel
from threadline.agent.tools import CalculationError, default_tools, evaluate, format_number
from threadline.config import Settings

MODEL = OfflineChatModel().bind_tools(default_tools())


def _reply(*messages: str) -> AIMessage:
    assert isinstance(MODEL, OfflineChatModel)
    return MODEL.respond([HumanMessage(m) for m in messages])


def test_it_recalls_the_latest_statement() -> None:
    assert _reply("My name is Ada.", "My name is Grace.", "What is my name?").content == "Your name is Grace."
    assert "do not know your name" in str(_reply("What is my name?").content)


def test_it_calls_the_calculator_for_arithmetic_and_the_clock_for_time() -> None:
    call = _reply("What is (2+3)*4?").tool_calls[0]
    assert call["name"] == "calculator" and call["args"] == {"expression": "(2+3)*4"}
    assert _reply("What time is it?").tool_calls[0]["name"] == "current_time"
    assert _reply("What is 2+2?").tool_calls[0]["id"] == _reply("What is 2+2?").tool_calls[0]["id"], "deterministic"


def test_it_answers_from_tool_results() -> None:
    assert isinstance(MODEL, OfflineChatModel)
    reply = MODEL.respond(
        [HumanMessage("What is 6*7?"), AIMessage(""), ToolMessage("42", tool_call_id="c", name="calculator")]
    )
    assert reply.content == "The answer is 42."


def test_without_tools_it_does_not_call_them() -> None:
    assert not OfflineChatModel().respond([HumanMessage("What is 2+2?")]).tool_calls


@pytest.mark.parametrize(
    ("expression", "value"), [("2+3*4", "14"), ("(2+3)*4", "20"), ("2**10", "1024"), ("2^3", "8"), ("7/2", "3.5")]
)
def test_the_calculator_evaluates_arithmetic(expression: str, value: str) -> None:
    assert format_number(evaluate(expression)) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('true')", "only numbers"),
        ("9**9**9", "exponent above"),
        ("1/0", "division by zero"),
        ("10**300*10**300", "too large"),
        ("(-1)**0.5", "not a finite real"),
        ("1+" * 150 + "1", "longer than"),
        ("2+", "not an arithmetic expression"),
    ],
)
def test_the_calculator_refuses_what_is_not_bounded_arithmetic(expression: str, message: str) -> None:
    with pytest.raises(CalculationError, match=message):
        evaluate(expression)


@pytest.mark.parametrize("approval_tools", ["", "current_time"])
@pytest.mark.parametrize("query", ["Hello there.", "What is 2+3?", "What time is it?"])
def test_a_default_agent_turn_stays_on_the_event_loop(query: str, approval_tools: str) -> None:
    """The model, the route after it and the tools run on the loop: langchain-core would hand each to a
    worker thread, a thread hop each (docs/performance.md: a fifth of a tool turn's CPU)."""

    async def turn() -> int:
        executor = CountingExecutor(max_workers=1)
        asyncio.get_running_loop().set_default_executor(executor)
        settings = Settings(offline_model=True, approval_tools=approval_tools)
        async with open_graph_builder(settings.agent) as builder:
            graph = builder.compile(checkpointer=InMemorySaver())
        result = await graph.ainvoke({"messages": [("human", query)]}, {"configurable": {"thread_id": "t"}})
        assert len(result["messages"]) >= 2
        return executor.handed

    assert asyncio.run(turn()) == 0
