"""The graph bench/agent_server.py serves on the LangGraph Agent Server: Threadline's default agent.

The same builder Threadline serves (default_agent with the offline, instant model and the default
tools), compiled without a checkpointer: the Agent Server brings its own. langgraph.json names it
as `<this file>:graph`.

The Agent Server runs in its own venv (.venv-agent-server, `make bench-agent-server-venv`): its
langgraph-api pins grpcio and protobuf below ours, so Threadline is not installed there; its
source tree is put on sys.path instead (the graph needs only langgraph, langchain-core and the
engine's storage libraries, which that venv has at our pinned versions).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_SERVER_SOURCE = str(Path(__file__).resolve().parent.parent / "server")
if _SERVER_SOURCE not in sys.path:
    sys.path.insert(0, _SERVER_SOURCE)

from threadline.agent.graphs import default_agent  # noqa: E402
from threadline.agent.offline_model import OfflineChatModel  # noqa: E402
from threadline.agent.tools import default_tools  # noqa: E402

graph: Any = default_agent(OfflineChatModel(), default_tools()).compile()
