"""The offline model: a deterministic chat model that keeps the service usable without a key.

It is a real LangChain chat model (tools are bound the usual way, tokens stream
through the usual callbacks), so the graph, the checkpointer and the streaming
path run exactly as they do with a hosted model. What it can do:

* "My name is Ada." -> remembers it (it is in the thread's messages);
  "What is my name?" -> answers from the conversation, the latest statement winning;
* arithmetic ("What is 2+3*4?") -> calls the `calculator` tool, then answers with its result;
* "What time is it?" -> calls the `current_time` tool;
* anything else -> says what it is and how many messages the thread holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from threadline.agent.message_text import text_of

_STATEMENT = re.compile(r"\bmy ([a-z][a-z0-9 ]{0,30}?) is ([^.!?\n]+)", re.IGNORECASE)
_QUESTION = re.compile(r"\bwhat(?:'s| is) my ([a-z][a-z0-9 ]{0,30}?)\s*\?", re.IGNORECASE)
# An arithmetic expression: numbers joined by at least one operator.
_ARITHMETIC = re.compile(r"[-(]*\d[\d.]*(?:\s*(?:\*\*|//|[-+*/%^])\s*[-(]*\d[\d.]*\)*)+\)*")
_TIME = re.compile(r"\b(time|date|today)\b", re.IGNORECASE)
_TOKEN = re.compile(r"\S+\s*|\s+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _call_id(messages: Sequence[BaseMessage], name: str) -> str:
    # Deterministic: the same conversation gives the same id.
    digest = hashlib.sha256(f"{len(messages)}:{name}:{text_of(messages[-1])}".encode()).hexdigest()
    return f"call_{digest[:16]}"


class OfflineChatModel(BaseChatModel):
    """A deterministic chat model that needs no network; see the module docstring."""

    token_delay_s: float = 0.0
    """Pause before each streamed token (0: as fast as possible)."""
    tool_names: tuple[str, ...] = ()
    """Names of the tools bound with bind_tools()."""

    @property
    def _llm_type(self) -> str:
        return "threadline-offline"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        names = tuple(convert_to_openai_tool(t)["function"]["name"] for t in tools)
        return self.model_copy(update={"tool_names": names})

    def respond(self, messages: Sequence[BaseMessage]) -> AIMessage:
        """The whole reply to a conversation (what streaming delivers piece by piece)."""
        last = messages[-1] if messages else HumanMessage("")
        if isinstance(last, ToolMessage):
            return AIMessage(content=self._after_tools(messages))
        query = text_of(last)
        statements = _STATEMENT.findall(query)
        if statements:
            noted = "; ".join(f"your {key.strip().lower()} is {value.strip()}" for key, value in statements)
            return AIMessage(content=f"Noted: {noted}.")
        question = _QUESTION.search(query)
        if question:
            return AIMessage(content=self._recall(messages, question.group(1).strip().lower()))
        expression = _ARITHMETIC.search(query)
        if expression and "calculator" in self.tool_names:
            return self._tool_call(messages, "calculator", {"expression": expression.group(0).strip()})
        if _TIME.search(query) and "current_time" in self.tool_names:
            return self._tool_call(messages, "current_time", {})
        earlier = len(messages) - 1
        return AIMessage(
            content=(
                f'I am the offline model (no OPENAI_API_KEY is set). You said: "{query.strip()}". '
                f"This thread held {earlier} earlier message{'s' if earlier != 1 else ''}."
            )
        )

    def _tool_call(self, messages: Sequence[BaseMessage], name: str, args: dict[str, Any]) -> AIMessage:
        return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": _call_id(messages, name)}])

    @staticmethod
    def _recall(messages: Sequence[BaseMessage], key: str) -> str:
        for message in reversed(messages):
            if not isinstance(message, HumanMessage):
                continue
            for said_key, value in reversed(_STATEMENT.findall(text_of(message))):
                if said_key.strip().lower() == key:
                    return f"Your {key} is {value.strip()}."
        return f'I do not know your {key} yet. Tell me with "My {key} is ...".'

    @staticmethod
    def _after_tools(messages: Sequence[BaseMessage]) -> str:
        results: list[ToolMessage] = []
        for message in reversed(messages):
            if not isinstance(message, ToolMessage):
                break
            results.insert(0, message)
        parts = []
        for result in results:
            content = text_of(result)
            if result.status == "error":
                parts.append(f"The {result.name} tool failed: {content}")
            elif result.name == "calculator":
                parts.append(f"The answer is {content}.")
            elif result.name == "current_time":
                parts.append(f"The current time is {content}.")
            else:
                parts.append(f"{result.name} returned: {content}")
        return " ".join(parts)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Through the stream, so token_delay_s costs a unary turn what it costs a streamed one. The
        # chunks are merged here, not with langchain-core's agenerate_from_stream, which merges them on a
        # worker thread: a thread hop for a reply of a few dozen chunks.
        chunks = [chunk async for chunk in self._astream(messages, stop, None, **kwargs)]
        return generate_from_stream(iter(chunks))

    def _chunks(self, messages: list[BaseMessage]) -> Iterator[AIMessageChunk]:
        reply = self.respond(messages)
        if reply.tool_calls:
            yield AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"], "index": i}
                    for i, call in enumerate(reply.tool_calls)
                ],
            )
            return
        for token in _tokens(text_of(reply)):
            yield AIMessageChunk(content=token)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            generation = ChatGenerationChunk(message=chunk)
            if run_manager is not None:
                run_manager.on_llm_new_token(text_of(chunk), chunk=generation)
            yield generation

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            if self.token_delay_s > 0:
                await asyncio.sleep(self.token_delay_s)
            generation = ChatGenerationChunk(message=chunk)
            if run_manager is not None:
                await run_manager.on_llm_new_token(text_of(chunk), chunk=generation)
            yield generation
