"""Which headers a reverse proxy passes on (RFC 9110 section 7.6.1) and which it cannot.

Hop-by-hop headers describe one connection and are not forwarded; nor is any header the
`Connection` header names. `Host` is the upstream's; `Content-Length` and
`Transfer-Encoding` are set again by the HTTP client for the body actually sent.
"""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: request headers the gateway never forwards as received
REQUEST_DROP = HOP_BY_HOP | {"host", "expect"}


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    if "Connection" not in headers:
        return set()
    return {
        token.strip().lower()
        for value in headers.getall("Connection", ())
        for token in value.split(",")
        if token.strip()
    }


def upstream_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    added: Mapping[str, str],
    *,
    keep_length: bool,
) -> CIMultiDict[str]:
    """The request headers for the upstream: end-to-end ones as received, plus `added`
    (replacing same-named ones). `keep_length` keeps Content-Length (body unchanged)."""
    drop = REQUEST_DROP | _connection_tokens(headers)
    if not keep_length:
        drop = drop | {"content-length"}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    for name, value in added.items():
        out[name] = value
    return out


def response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's response headers for the caller, repeated ones (Set-Cookie) kept."""
    drop = HOP_BY_HOP | _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out
