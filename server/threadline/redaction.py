"""Secrets out of what is logged or shown: the one place that masks them."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

MASK = "***"


def redact(url: str) -> str:
    """The URL with every password masked, for logs: the user info's, and any query parameter
    whose name holds "password" (libpq's `password` and `sslpassword`), whatever its case."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    if query:
        query = "&".join(_redacted_parameter(item) for item in query.split("&"))
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # unchanged: geturl() would also drop an empty authority (sqlite:///PATH)
    return parts._replace(netloc=netloc, query=query).geturl()


def _redacted_parameter(item: str) -> str:
    name, equals, _ = item.partition("=")
    return f"{name}={MASK}" if equals and "password" in unquote(name).lower() else item
