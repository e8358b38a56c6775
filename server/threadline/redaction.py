"""Secrets out of what is logged or shown: the one place that masks them."""

from __future__ import annotations

from urllib.parse import urlsplit


def redact(url: str) -> str:
    """The URL with any password replaced, for logs."""
    parts = urlsplit(url)
    if parts.password:
        return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
    return url
