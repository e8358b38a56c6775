"""The ErrorReason enum of the contract names exactly the ErrorInfo reasons the server can send.

The server's set is read from its code: every construction of a threadline.errors class in
server/threadline (its `reason=` argument, else the class's default reason), plus the reason
strings the transport sets itself (an unexpected error's INTERNAL, an ErrorInfo built by hand).
A reason must be a string literal where it is given, so that this scan can read it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT
from threadline import errors
from threadline_client.v1 import error_reason_pb2

SERVER = ROOT / "server" / "threadline"
ERROR_CLASSES: dict[str, type[errors.ThreadlineError]] = {
    name: value
    for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, errors.ThreadlineError)
}


def _error_names(tree: ast.Module) -> dict[str, type[errors.ThreadlineError]]:
    """Local names bound to threadline.errors classes by `from threadline.errors import ...`."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "threadline.errors":
            for alias in node.names:
                if alias.name in ERROR_CLASSES:
                    names[alias.asname or alias.name] = ERROR_CLASSES[alias.name]
    return names


def _error_class(call: ast.Call, local: dict[str, type[errors.ThreadlineError]]) -> type[errors.ThreadlineError] | None:
    func = call.func
    if isinstance(func, ast.Name):
        return local.get(func.id)
    # `errors.NotFound(...)` after `from threadline import errors`
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "errors":
        return ERROR_CLASSES.get(func.attr)
    return None


def _names_error_info(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Name) and func.id == "ErrorInfo") or (
        isinstance(func, ast.Attribute) and func.attr == "ErrorInfo"
    )


def _reasons_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    local = _error_names(tree)
    reasons = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _names_error_info(node):
            # an ErrorInfo built by hand with a literal reason
            reasons.update(
                k.value.value
                for k in node.keywords
                if k.arg == "reason" and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)
            )
        elif isinstance(node, ast.Call) and (kind := _error_class(node, local)) is not None:
            given = [k.value for k in node.keywords if k.arg == "reason"]
            if not given:
                reasons.add(kind.reason)
                continue
            assert isinstance(given[0], ast.Constant) and isinstance(given[0].value, str), (
                f"{path.relative_to(ROOT)}:{node.lineno}: a reason must be a string literal to be checked"
            )
            reasons.add(given[0].value)
        elif isinstance(node, ast.Assign):
            # `reason = "X"` or `reason, metadata = "X", {...}`: a reason the transport sets itself
            for target in node.targets:
                pairs = (
                    zip(target.elts, node.value.elts, strict=False)
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                    else [(target, node.value)]
                )
                for name, value in pairs:
                    if (
                        isinstance(name, ast.Name)
                        and name.id == "reason"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                        and value.value.isupper()
                    ):
                        reasons.add(value.value)
    return reasons


def server_reasons() -> set[str]:
    """Every ErrorInfo reason the server's code can send in answer to a call."""
    # errors.py holds the classes' defaults, counted where a class is constructed without a reason.
    found = set().union(*(_reasons_in(path) for path in sorted(SERVER.rglob("*.py")) if path != SERVER / "errors.py"))
    # A ConfigurationError stops the server before it serves (`threadline serve` reports it and exits 1).
    return found - {errors.ConfigurationError.reason}


def test_the_scan_sees_the_reasons_it_must() -> None:
    found = server_reasons()
    assert {"THREAD_NOT_FOUND", "INVALID_ARGUMENT", "THREAD_HOLD_LOST", "INTERNAL", "MODEL_RATE_LIMITED"} <= found


def test_error_reason_enum_is_exactly_what_the_server_sends() -> None:
    enum = {name for name in error_reason_pb2.ErrorReason.keys() if name != "ERROR_REASON_UNSPECIFIED"}
    assert error_reason_pb2.ErrorReason.Value("ERROR_REASON_UNSPECIFIED") == 0
    sent = server_reasons()
    assert sent - enum == set(), "the server sends reasons the contract does not list: add them to ErrorReason"
    assert enum - sent == set(), "ErrorReason lists reasons the server never sends"
