"""scripts/check_public_apis.py (`make lint`) finds each way our code could reach a dependency's private parts."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_public_apis", ROOT / "scripts" / "check_public_apis.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _found(checker: ModuleType, tmp_path: Path, source: str) -> list[str]:
    path = tmp_path / "example.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return [line.split(": ", 1)[1] for line in checker.problems([path])]


def test_private_modules_and_names_of_a_dependency_are_found(checker: ModuleType, tmp_path: Path) -> None:
    found = _found(
        checker,
        tmp_path,
        """
        import langgraph.pregel._messages
        from openai._streaming import ServerSentEvent
        from langgraph.graph.message import _messages_delta_reducer
        from langgraph.graph.message import add_messages
        from threadline.agent.state import add_messages_batch
        """,
    )
    assert found == [
        "imports langgraph.pregel._messages",
        "imports from openai._streaming",
        "imports langgraph.graph.message._messages_delta_reducer",
    ]


def test_private_members_of_a_dependencys_base_class_are_found(checker: ModuleType, tmp_path: Path) -> None:
    found = _found(
        checker,
        tmp_path,
        """
        import openai
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        class Stream(openai.AsyncStream[object]):
            def __init__(self) -> None:
                self._decoder = None  # set by AsyncStream.__init__
                self._ours = None

        class Saver(AsyncPostgresSaver):
            def _cursor(self): ...

            def load(self) -> None:
                super()._load_blobs(None)
        """,
    )
    assert sorted(found) == [
        "Saver calls super()._load_blobs of a third-party base",
        "Saver overrides _cursor of a third-party base",
        "Stream uses _decoder of a third-party base",
    ]


def test_documented_extension_points_are_public(checker: ModuleType, tmp_path: Path) -> None:
    found = _found(
        checker,
        tmp_path,
        """
        from langchain_core.language_models import BaseChatModel

        class Model(BaseChatModel):
            @property
            def _llm_type(self) -> str:
                return "example"

            def _generate(self, messages, stop=None, run_manager=None, **kwargs): ...
        """,
    )
    assert found == []


def test_our_code_uses_public_apis_only(checker: ModuleType) -> None:
    paths = sorted(p for folder in checker.CHECKED for p in (ROOT / folder).rglob("*.py"))
    assert checker.problems(paths) == []
