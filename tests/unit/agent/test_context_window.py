"""The default agent's model sees a bounded window of a long thread; the thread itself keeps everything."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage, convert_to_messages, trim_messages
from langchain_core.messages.utils import count_tokens_approximately

from tests.model_server import ModelServer
from threadline.agent.context_window import model_view
from threadline.config import Settings
from threadline.engine.context import RequestContext
from threadline.engine.engine import Engine

SYSTEM = "You are Threadline's test agent."
BUDGET = 600
TURNS = 2000


def _tokens_sent(body: dict[str, object]) -> int:
    messages = body["messages"]
    assert isinstance(messages, list)
    return count_tokens_approximately(convert_to_messages(messages))


async def test_a_2000_turn_thread_sends_the_model_at_most_its_budget() -> None:
    with ModelServer() as model:
        settings = Settings(
            database_url="memory://",  # the window is the agent's: any backend would do, this one is the fastest
            openai_api_key="sk-test",
            openai_base_url=model.base_url,
            model="test-model",
            system_prompt=SYSTEM,
            context_max_tokens=BUDGET,
        )
        async with Engine.open(settings.engine) as engine:
            ctx = RequestContext(rpc="Ask")
            thread = (await engine.ask(ctx, "", "My name is Ada.")).thread_id
            for turn in range(1, TURNS):
                query = f"What is {turn}+1?" if turn % 10 == 0 else f"Note {turn}: the weather is fine today."
                await engine.ask(ctx, thread, query)
            state = await engine.get_state(ctx, thread)
        requests = model.requests
    assert len([m for m in state.messages if m.role == "human"]) == TURNS, "the thread keeps every question"
    assert len(requests) >= TURNS
    for request in requests:
        messages = request.body["messages"]
        assert isinstance(messages, list)
        assert messages[0] == {"role": "system", "content": SYSTEM}, "the system prompt is always sent"
        assert _tokens_sent(request.body) <= BUDGET, f"request {request.index} is over the budget"
        assert messages[1]["role"] == "user", "the window starts on a question"


def test_a_tool_call_is_never_sent_without_its_result() -> None:
    call = {"name": "calculator", "args": {"expression": "1+1"}, "id": "c1"}
    conversation = [
        HumanMessage("x" * 400),
        AIMessage("", tool_calls=[call]),
        ToolMessage("2", tool_call_id="c1"),
        AIMessage("It is 2."),
        HumanMessage("And now?"),
    ]
    for budget in range(1, 200, 7):
        window = model_view(conversation, system_prompt="", max_tokens=budget)
        assert isinstance(window[0], HumanMessage), budget
        ids = {c["id"] for m in window if isinstance(m, AIMessage) for c in m.tool_calls}
        assert {m.tool_call_id for m in window if isinstance(m, ToolMessage)} == ids, budget
        # The same window langchain-core's trim_messages cuts, whenever the current turn fits.
        expected = trim_messages(
            conversation, max_tokens=budget, token_counter=count_tokens_approximately, start_on="human"
        )
        if expected:
            assert window == expected, budget
    assert model_view([], system_prompt="", max_tokens=10) == []
    # A current question over the budget on its own is still sent.
    assert model_view([HumanMessage("y" * 10_000)], system_prompt="S", max_tokens=10)[1].content == "y" * 10_000
