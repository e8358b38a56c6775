"""The `threadline` subcommands that talk to a running server: ask, history, rewind, delete, state, resume, threads.

They print human-readable text, or with --json the response messages as JSON.
Results go to stdout and everything else (progress, ids, errors) to stderr, so
`threadline ask "..." > answer.txt` captures just the answer.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable

import grpc
from google.protobuf import json_format

from threadline_client import ThreadlineClient, ThreadlineError, pb
from threadline_client.constants import DEFAULT_ADDRESS, TOKEN_ENV

_DEFAULT_TIMEOUT_SECONDS = 60.0

_Command = Callable[[ThreadlineClient, argparse.Namespace], None]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # argparse's own code for a command line it refuses
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE: what a shell shows for a writer whose reader went away

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK:<5}success
  {EXIT_FAILED:<5}the call failed: the server could not be reached, took longer than
       --timeout, or answered an error status other than INVALID_ARGUMENT
  {EXIT_USAGE:<5}bad usage: a command line the parser refuses, or a request the
       server answered with INVALID_ARGUMENT
  {EXIT_STDOUT_CLOSED:<5}stdout was closed before everything was printed (e.g. piped
       into `head`): the command stops quietly, as if ended by SIGPIPE"""


def add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the client subcommands (ask, history, rewind, delete, state, resume, threads).

    Each sets `func`: call `args.func(args)` for the command's exit code, one of
    EXIT_CODES_HELP's (which each command's --help shows). EXIT_STDOUT_CLOSED is
    left to the caller, who owns stdout.

    Args:
        subparsers: What ArgumentParser.add_subparsers() returned.
    """
    commands: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], _Command]] = [
        ("ask", "run one turn of the agent and print its answer", _declare_ask, _ask),
        ("history", "print a thread's conversation and checkpoints", _declare_history, _history),
        ("rewind", "move a thread's head back to an earlier checkpoint", _declare_rewind, _rewind),
        ("delete", "delete a thread and all its checkpoints", _declare_delete, _delete),
        ("state", "print a thread's full state at a checkpoint (default: its head)", _declare_state, _state),
        ("resume", "answer a turn that waits for a human's approval", _declare_resume, _resume),
        ("threads", "list threads, most recently active first", _declare_threads, _threads),
    ]
    for name, help_text, declare, run in commands:
        parser = _add_command(subparsers, name, help_text)
        declare(parser)
        _add_connection_arguments(parser)
        parser.set_defaults(func=_with_client(run))


def _declare_ask(ask: argparse.ArgumentParser) -> None:
    ask.add_argument("query", help="the message to send")
    ask.add_argument("--thread", default="", help="the thread to continue (default: start a new one)")
    ask.add_argument("--request-id", default="", help="an id recorded in the audit trail")
    ask.add_argument("--checkpoint", default="", help="fork: run from this checkpoint of --thread instead of its head")
    ask.add_argument("--stream", action="store_true", help="print tokens and tool calls as they happen")
    ask.add_argument(
        "--abandon-interrupt",
        action="store_true",
        help="on a thread that waits for a human's approval, give up the pending tool calls and ask this instead",
    )
    ask.add_argument(
        "--json", action="store_true", help="print the Turn as JSON (with --stream: each event, one a line)"
    )


def _declare_history(history: argparse.ArgumentParser) -> None:
    history.add_argument("thread", help="the thread to read")
    history.add_argument("--page-size", type=int, default=0, help="checkpoints per page (default: 20)")
    history.add_argument("--page-token", default="", help="the next-page token a previous call printed")
    history.add_argument(
        "--messages", type=int, default=0, help="the conversation's newest messages to print (default: 100)"
    )
    history.add_argument("--all", action="store_true", help="fetch every page")
    history.add_argument("--tree", action="store_true", help="draw every checkpoint as a tree of branches (all pages)")
    history.add_argument("--json", action="store_true", help="print the HistoryResponse as JSON")


def _declare_rewind(rewind: argparse.ArgumentParser) -> None:
    rewind.add_argument("thread", help="the thread to rewind")
    target = rewind.add_mutually_exclusive_group(required=True)
    target.add_argument("--steps-back", type=int, help="how many checkpoints to go back")
    target.add_argument("--checkpoint", help="the checkpoint to go back to")
    rewind.add_argument("--request-id", default="", help="an id recorded in the audit trail")
    rewind.add_argument("--json", action="store_true", help="print the RewindResponse as JSON")


def _declare_delete(delete: argparse.ArgumentParser) -> None:
    delete.add_argument("thread", help="the thread to delete")
    delete.add_argument("--allow-missing", action="store_true", help="succeed when the thread does not exist")
    delete.add_argument("--json", action="store_true", help="print the DeleteThreadResponse as JSON")


def _declare_state(state: argparse.ArgumentParser) -> None:
    state.add_argument("thread", help="the thread to read")
    state.add_argument("--checkpoint", default="", help="the checkpoint to read (default: the head)")
    state.add_argument("--json", action="store_true", help="print the GetStateResponse as JSON")


def _declare_resume(resume: argparse.ArgumentParser) -> None:
    resume.add_argument("thread", help="the interrupted thread")
    resume.add_argument("interrupt", help="the interrupt id the paused turn printed")
    decision = resume.add_mutually_exclusive_group(required=True)
    decision.add_argument("--approve", action="store_true", help="run the pending tool calls")
    decision.add_argument("--reject", metavar="REASON", help="run none of them; the model is told the reason")
    decision.add_argument(
        "--edit", metavar="CALL_ID=JSON", action="append", help="run a call with these arguments (repeatable)"
    )
    decision.add_argument("--value", metavar="JSON", help="answer a user graph's own interrupt() with this JSON")
    resume.add_argument("--request-id", default="", help="an id recorded in the audit trail")
    resume.add_argument("--stream", action="store_true", help="print tokens and tool calls as they happen")
    resume.add_argument("--json", action="store_true", help="print the Turn as JSON")


def _declare_threads(threads: argparse.ArgumentParser) -> None:
    threads.add_argument("--page-size", type=int, default=0, help="threads per page (default: 20)")
    threads.add_argument("--page-token", default="", help="the next-page token a previous call printed")
    threads.add_argument("--json", action="store_true", help="print the ListThreadsResponse as JSON")


def _add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    """A client subcommand whose --help ends with the exit codes."""
    return subparsers.add_parser(
        name, help=help_text, epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=os.environ.get("THREADLINE_ADDRESS", DEFAULT_ADDRESS),
        help=f"the server, host:port (default: $THREADLINE_ADDRESS, else {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=_DEFAULT_TIMEOUT_SECONDS,
        help="seconds each call may take (default: %(default)s)",
    )
    security = parser.add_argument_group("credentials and TLS")
    security.add_argument("--token", help=f"API key or JWT access token (default: ${TOKEN_ENV})")
    security.add_argument("--tls", action="store_true", help="connect over TLS (implied by the file options)")
    security.add_argument("--ca-file", help="PEM CAs that signed the server's certificate (default: the system's)")
    security.add_argument("--cert-file", help="PEM client certificate, for a server that requires one (mTLS)")
    security.add_argument("--key-file", help="PEM private key of --cert-file")


def _with_client(command: _Command) -> Callable[[argparse.Namespace], int]:
    """Wraps a command so it gets a connected client and failures become an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            client = ThreadlineClient(
                args.address,
                token=args.token,
                tls=args.tls,
                ca_file=args.ca_file,
                cert_file=args.cert_file,
                key_file=args.key_file,
            )
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            with client:
                command(client, args)
        except ThreadlineError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USAGE if err.code == grpc.StatusCode.INVALID_ARGUMENT else EXIT_FAILED
        return EXIT_OK

    return run


def _ask(client: ThreadlineClient, args: argparse.Namespace) -> None:
    if args.stream:
        events = client.stream_ask(
            args.query,
            thread_id=args.thread,
            request_id=args.request_id,
            checkpoint_id=args.checkpoint,
            abandon_interrupt=args.abandon_interrupt,
            timeout=args.timeout,
        )
        if args.json:
            for event in events:
                print(json_format.MessageToJson(event, indent=None), flush=True)
            return
        turn = _print_stream(events)
    else:
        turn = client.ask(
            args.query,
            thread_id=args.thread,
            request_id=args.request_id,
            checkpoint_id=args.checkpoint,
            abandon_interrupt=args.abandon_interrupt,
            timeout=args.timeout,
        )
        if args.json:
            print(json_format.MessageToJson(turn))
            return
        print(turn.answer)
    _print_pause(turn)
    print(f"thread: {turn.thread_id}  checkpoint: {turn.checkpoint_id}", file=sys.stderr)


def _print_stream(events: Iterable[pb.StreamAskResponse] | Iterable[pb.StreamResumeResponse]) -> pb.Turn:
    """Prints a streamed turn as it arrives and returns its final Turn.

    Tokens go to stdout; tool activity to stderr, after ending any partial
    stdout line so that on a terminal each tool line stands on its own. A
    failure mid-way ends the partial line too before it propagates, so the
    error the caller prints (to stderr) starts on a line of its own.
    """
    line = _TokenLine()
    try:
        for event in events:
            kind = event.WhichOneof("event")
            if kind == "token":
                line.write(event.token)
                continue
            line.end()
            if kind == "final":
                if not line.started:
                    # The server streamed no tokens (a model that does not stream): show the answer whole.
                    print(event.final.answer)
                return event.final
            _print_tool_event(event)
    except ThreadlineError:
        line.end()
        raise
    raise ThreadlineError(grpc.StatusCode.INTERNAL, "the stream ended without its final event")


class _TokenLine:
    """Streamed tokens on stdout, and whether they left the cursor mid-line."""

    def __init__(self) -> None:
        self._mid_line = False
        self._message_id: str | None = None  # None until the first token

    @property
    def started(self) -> bool:
        """Whether any token arrived."""
        return self._message_id is not None

    def write(self, token: pb.TokenDelta) -> None:
        """Prints the token at once; a new AI message (e.g. the answer after a tool call) starts a new line."""
        if token.message_id != self._message_id:
            self.end()
        if token.text:
            sys.stdout.write(token.text)
            self._mid_line = not token.text.endswith("\n")
        sys.stdout.flush()
        self._message_id = token.message_id

    def end(self) -> None:
        """Ends the partial line, if the tokens left one."""
        if self._mid_line:
            print(flush=True)
            self._mid_line = False


def _print_tool_event(event: pb.StreamAskResponse | pb.StreamResumeResponse) -> None:
    """Prints a tool call or result to stderr."""
    kind = event.WhichOneof("event")
    if kind == "tool_call":
        call = event.tool_call
        print(f"[tool call] {call.name} {call.arguments_json}", file=sys.stderr, flush=True)
    elif kind == "tool_result":
        result = event.tool_result
        label = "tool error" if result.is_error else "tool result"
        print(f"[{label}] {result.name}: {result.content}", file=sys.stderr, flush=True)


def _history(client: ThreadlineClient, args: argparse.Namespace) -> None:
    response = client.history(
        args.thread,
        page_size=args.page_size,
        page_token=args.page_token,
        message_limit=args.messages,
        timeout=args.timeout,
    )
    if args.tree:
        checkpoints = list(client.iter_checkpoints(args.thread, page_size=100, timeout=args.timeout))
        _print_tree(checkpoints, response.head_checkpoint_id)
        return
    if args.all:
        page = response
        while page.next_page_token:
            page = client.history(
                args.thread, page_size=args.page_size, page_token=page.next_page_token, timeout=args.timeout
            )
            response.checkpoints.extend(page.checkpoints)
        response.next_page_token = ""
    if args.json:
        print(json_format.MessageToJson(response))
        return
    left_out = response.message_count - len(response.messages)
    if left_out > 0:
        print(f"({left_out} older messages not shown; --messages N shows more)")
    _print_messages(response.messages)
    if response.messages:
        print()
    for checkpoint in response.checkpoints:
        marker = "*" if checkpoint.checkpoint_id == response.head_checkpoint_id else " "
        print(f"{marker} {_format_checkpoint(checkpoint)}")
    if response.next_page_token:
        print(f"more: --page-token {response.next_page_token}", file=sys.stderr)


def _print_tree(checkpoints: list[pb.Checkpoint], head: str) -> None:
    """Draws the checkpoints oldest first, each child indented under its parent; branches get deeper.

    The current branch (the head and its ancestors) is marked with "*".
    """
    children: dict[str, list[pb.Checkpoint]] = {}
    for checkpoint in reversed(checkpoints):  # oldest first
        children.setdefault(checkpoint.parent_checkpoint_id, []).append(checkpoint)
    by_id = {c.checkpoint_id: c for c in checkpoints}
    current: set[str] = set()
    walk = head
    while walk in by_id:
        current.add(walk)
        walk = by_id[walk].parent_checkpoint_id
    # Iterative, depth-first: a long thread must not hit Python's recursion limit.
    stack: list[tuple[pb.Checkpoint, int]] = [(c, 0) for c in reversed(children.get("", []))]
    while stack:
        checkpoint, depth = stack.pop()
        marker = "*" if checkpoint.checkpoint_id in current else " "
        print(f"{marker} {'  ' * depth}{_format_checkpoint(checkpoint)}")
        kids = children.get(checkpoint.checkpoint_id, [])
        # The first child continues the line; later children are branches, drawn one level deeper.
        stack.extend((kid, depth + (1 if i else 0)) for i, kid in reversed(list(enumerate(kids))))


def _resume(client: ThreadlineClient, args: argparse.Namespace) -> None:
    if args.approve:
        decision = pb.ResumeDecision(approve=pb.Approval())
    elif args.reject is not None:
        decision = pb.ResumeDecision(reject=pb.Rejection(reason=args.reject))
    elif args.edit:
        edits = dict(item.partition("=")[::2] for item in args.edit)
        decision = pb.ResumeDecision(edit=pb.Edit(arguments_json=edits))
    else:
        decision = pb.ResumeDecision(value_json=args.value)
    if args.stream and not args.json:
        events = client.stream_resume(
            args.thread, args.interrupt, decision, request_id=args.request_id, timeout=args.timeout
        )
        turn = _print_stream(events)
    else:
        turn = client.resume(args.thread, args.interrupt, decision, request_id=args.request_id, timeout=args.timeout)
        if args.json:
            print(json_format.MessageToJson(turn))
            return
        print(turn.answer)
    _print_pause(turn)
    print(f"thread: {turn.thread_id}  checkpoint: {turn.checkpoint_id}", file=sys.stderr)


def _print_pause(turn: pb.Turn) -> None:
    """Says what a paused turn waits for, and how to answer it."""
    for pause in turn.interrupts:
        calls = ", ".join(f"{c.name} {c.arguments_json}" for c in pause.tool_calls) or pause.value_json
        print(f"[waiting for approval] {calls}", file=sys.stderr)
        print(
            f"  answer: threadline resume {turn.thread_id} {pause.interrupt_id} --approve | --reject REASON",
            file=sys.stderr,
        )


def _state(client: ThreadlineClient, args: argparse.Namespace) -> None:
    response = client.get_state(args.thread, checkpoint_id=args.checkpoint, timeout=args.timeout)
    if args.json:
        print(json_format.MessageToJson(response))
        return
    print(f"{'head' if response.is_head else 'checkpoint'}: {_format_checkpoint(response.checkpoint)}")
    print(f"next: {', '.join(response.next) or '(nothing: the turn ended here)'}")
    print(f"metadata: {response.metadata_json}")
    print()
    _print_messages(response.messages)


def _threads(client: ThreadlineClient, args: argparse.Namespace) -> None:
    response = client.list_threads(page_size=args.page_size, page_token=args.page_token, timeout=args.timeout)
    if args.json:
        print(json_format.MessageToJson(response))
        return
    for thread in response.threads:
        updated = thread.update_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        print(f"{thread.thread_id}  {updated}  turns={thread.turn_count}  {thread.title}")
    if response.next_page_token:
        print(f"more: --page-token {response.next_page_token}", file=sys.stderr)


def _rewind(client: ThreadlineClient, args: argparse.Namespace) -> None:
    response = client.rewind(
        args.thread,
        steps_back=args.steps_back,
        checkpoint_id=args.checkpoint,
        request_id=args.request_id,
        timeout=args.timeout,
    )
    if args.json:
        print(json_format.MessageToJson(response))
        return
    print(f"head: {_format_checkpoint(response.head)}")
    print(f"rewound to: {response.rewound_to_checkpoint_id}")
    print()
    _print_messages(response.messages)


def _delete(client: ThreadlineClient, args: argparse.Namespace) -> None:
    response = client.delete_thread(args.thread, allow_missing=args.allow_missing, timeout=args.timeout)
    if args.json:
        print(json_format.MessageToJson(response, always_print_fields_with_no_presence=True))
        return
    print(f"deleted {response.thread_id}" if response.existed else f"{response.thread_id} did not exist")


def _print_messages(messages: Iterable[pb.Message]) -> None:
    for message in messages:
        role = pb.Role.Name(message.role).removeprefix("ROLE_").lower()
        if message.role == pb.ROLE_TOOL:
            print(f"{role} {message.name}: {message.text}")
            continue
        if message.text:
            print(f"{role}: {message.text}")
        for call in message.tool_calls:
            print(f"{role}: [tool call] {call.name} {call.arguments_json}")


def _format_checkpoint(checkpoint: pb.Checkpoint) -> str:
    source = pb.CheckpointSource.Name(checkpoint.source).removeprefix("CHECKPOINT_SOURCE_").lower()
    return "  ".join(
        [
            checkpoint.checkpoint_id,
            f"parent={checkpoint.parent_checkpoint_id or '-'}",
            f"step={checkpoint.step}",
            source,
            f"nodes={','.join(checkpoint.nodes) or '-'}",
            checkpoint.preview,
        ]
    )
