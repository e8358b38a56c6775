"""What the sync and async clients share besides their calls: how they are made, and how their methods look."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, get_args, get_type_hints

import grpc

from .constants import DEFAULT_ADDRESS, DEFAULT_MAX_MESSAGE_BYTES, TOKEN_ENV

_MESSAGE_LIMIT_KEYS = ("grpc.max_send_message_length", "grpc.max_receive_message_length")
_MethodT = TypeVar("_MethodT", bound=Callable[..., Any])


class ClientBase:
    """The settings a client is made with; each client adds how it opens its channel and runs a call."""

    def __init__(
        self,
        target: str = DEFAULT_ADDRESS,
        *,
        token: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Makes a client of the server at `target`; the class docstring says when its channel opens.

        Args:
            target: The server's address, "host:port".
            token: The API key or JWT access token sent as `authorization: Bearer <token>` with
                every call; None: $THREADLINE_TOKEN when set, else no credentials (open mode).
            tls: Connect over TLS, trusting the system's CAs unless `ca_file` names others.
            ca_file: PEM file of the CAs that signed the server's certificate (implies TLS).
            cert_file: PEM client certificate, for a server that requires one (mTLS; implies TLS).
            key_file: PEM private key of `cert_file`.
            credentials: Channel credentials built by the caller, instead of tls/ca_file/cert_file/key_file.
            metadata: More metadata sent with every call.
            max_message_bytes: The largest message sent or received.
            channel_options: More gRPC channel options, e.g. ("grpc.keepalive_time_ms", 30000).
        """
        self._target = target
        self._credentials = credentials or _tls_credentials(tls, ca_file, cert_file, key_file)
        if credentials is not None and self._credentials is not credentials:
            raise ValueError("pass credentials, or tls/ca_file/cert_file/key_file, not both")
        self._options = _with_message_limits(max_message_bytes, channel_options)
        token = os.environ.get(TOKEN_ENV) if token is None else token
        self._metadata = (*metadata, *((("authorization", f"Bearer {token}"),) if token else ()))
        self._init_channel()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # client_method cannot know the class its method is assigned in: it is told here,
        # so that repr(), pickle and documentation tools name it ThreadlineClient.ask.
        for name, attribute in vars(cls).items():
            if getattr(attribute, "__wrapped__", None) is not None:
                attribute.__qualname__ = f"{cls.__qualname__}.{name}"

    def _init_channel(self) -> None:
        """Opens the channel, or prepares to open it on the first call; the last step of __init__."""
        raise NotImplementedError


def client_method(
    method: _MethodT, spec: Callable[..., Any], *, returns_in: Callable[[Any], Any] | None = None, note: str = ""
) -> _MethodT:
    """Returns `method`, which runs the call `spec` makes, dressed as the public method `spec` describes.

    It takes the spec's name, docstring and parameters (after `self`), so that
    help() and inspect.signature() show what callers pass, whichever client.

    Args:
        method: The client's function, taking self and then the spec's arguments.
        spec: A function of threadline_client._calls, returning a call generic in what the caller gets.
        returns_in: The annotation of what the method returns the spec's result in, from the result's type
            (e.g. `lambda item: Iterator[item]`); None: returned as is.
        note: A paragraph put after the docstring's first, e.g. how this client's iteration ends the call.
    """
    (result_type,) = get_args(get_type_hints(spec)["return"])
    signature = inspect.signature(spec, eval_str=True)
    method.__name__ = method.__qualname__ = spec.__name__  # ClientBase.__init_subclass__ qualifies it
    method.__doc__ = _with_note(inspect.cleandoc(spec.__doc__ or ""), note)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *signature.parameters.values()],
        return_annotation=result_type if returns_in is None else returns_in(result_type),
    )
    method.__annotations__ = {
        **{name: parameter.annotation for name, parameter in signature.parameters.items()},
        "return": method.__signature__.return_annotation,  # type: ignore[attr-defined]
    }
    method.__wrapped__ = spec  # type: ignore[attr-defined]
    return method


def _with_note(doc: str, note: str) -> str:
    summary, *rest = doc.split("\n\n", 1)
    return "\n\n".join([summary, note, *rest]) if note else doc


def _tls_credentials(
    tls: bool, ca_file: str | None, cert_file: str | None, key_file: str | None
) -> grpc.ChannelCredentials | None:
    """TLS channel credentials from PEM files; None for plaintext (no TLS option given)."""
    if not (tls or ca_file or cert_file or key_file):
        return None
    if bool(cert_file) != bool(key_file):
        raise ValueError("cert_file and key_file go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file), private_key=_read(key_file), certificate_chain=_read(cert_file)
    )


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as file:
        return file.read()


def _with_message_limits(max_message_bytes: int, extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Returns `extra` plus the message size limit both ways, unless `extra` sets a limit itself."""
    given = {key for key, _ in extra}
    limits = [(key, max_message_bytes) for key in _MESSAGE_LIMIT_KEYS if key not in given]
    return [*limits, *extra]
