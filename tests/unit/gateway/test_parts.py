"""The gateway's pure parts: settings glue, header forwarding, how a response is written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import StreamReader, web
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, CIMultiDictProxy

from worker.client import HintsClient
from worker.gateway.config import GatewayConfig
from worker.gateway.headers import response_headers, upstream_headers
from worker.gateway.metrics import GatewayMetrics
from worker.gateway.relay import UpstreamRelay, _HeadersWithBody
from worker.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WORKER_"):
            monkeypatch.delenv(name)


# --- settings ----------------------------------------------------------------------------------


def test_gateway_section_from_toml_env_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "w.toml"
    config.write_text(
        'bootstrap_servers = "k:9092"\n[topics]\nhints = "h"\ntries = "t"\n'
        "[learner]\nscale = 7\n"
        '[gateway]\nupstream = "http://llm:8000/base/"\nprofile = "nemo-relay"\n'
        "min_osl_coverage = 0.75\n"
        "[gateway.fallback_hints]\nosl = 256\n"
    )
    monkeypatch.setenv("WORKER_GATEWAY__MIN_RUNS", "3")
    settings = load_settings(config, {"gateway.port": 9000})
    gateway = GatewayConfig.from_settings(settings)
    assert gateway.upstream == "http://llm:8000/base"  # the request path follows it
    assert gateway.port == 9000
    client = HintsClient.from_settings(settings)
    assert client.profile == "nemo-relay"
    assert client.view.topics == {"h": "hints", "t": "tries"}
    assert client.resolver.config.scale == 7
    assert client.resolver.min_runs == 3
    assert (client.resolver.min_osl_coverage, client.resolver.min_scored) == (0.75, 20)
    assert client.resolver.fallback is not None and client.resolver.fallback["osl"] == 256
    assert client.resolver.fallback["prefix_id"] == "fallback"


def test_fallback_hints_as_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_GATEWAY__FALLBACK_HINTS", '{"osl": 64, "latency_sensitivity": 2}')
    fallback = load_settings(None).gateway.fallback_hints
    assert fallback is not None and fallback.osl == 64 and fallback.latency_sensitivity == 2.0


def test_an_upstream_is_required() -> None:
    with pytest.raises(SettingsError, match=r"gateway\.upstream \(env WORKER_GATEWAY__UPSTREAM\)"):
        GatewayConfig.from_settings(load_settings(None))


@pytest.mark.parametrize(
    ("upstream", "why"),
    [
        ("llm:8000", "expected http"),
        ("ftp://llm", "expected http"),
        ("http://", "expected http"),
        ("http://llm:99999", "bad port"),
        ("http://llm/x?y=1", "no query"),
        ("http://llm/#top", "no query"),
    ],
)
def test_bad_upstream_urls_are_refused(upstream: str, why: str) -> None:
    with pytest.raises(SettingsError, match=why):
        load_settings(None, {"gateway.upstream": upstream})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("gateway.profile", "triton"),
        ("gateway.port", "70000"),
        ("gateway.run_idle_s", "0"),
        ("gateway.max_body_bytes", "0"),
        ("gateway.fallback_hints.osl", "-1"),
        ("gateway.event_loop", "trio"),
        ("gateway.record", "maybe"),
        ("gateway.record_max_calls", "0"),
        ("gateway.record_max_spool_bytes", "0"),
        ("gateway.record_close_timeout_s", "-1"),
    ],
)
def test_bad_gateway_values_name_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name.replace(".", r"\.")):
        load_settings(None, {name: value})


# --- headers -----------------------------------------------------------------------------------


def proxy(*items: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


def test_request_headers_lose_hop_by_hop_and_host_and_get_the_added_ones() -> None:
    headers = proxy(
        ("Host", "gateway:8080"),
        ("Connection", "keep-alive, X-Private"),
        ("X-Private", "per-connection"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "12"),
        ("Authorization", "Bearer k"),
        ("X-Dynamo-Request-Priority", "9"),
        ("Accept", "a"),
        ("Accept", "b"),
    )
    out = upstream_headers(headers, {"x-dynamo-request-priority": "3"}, keep_length=False)
    assert list(out.items()) == [
        ("Authorization", "Bearer k"),
        ("x-dynamo-request-priority", "3"),  # replaces the caller's (overwrite), in place
        ("Accept", "a"),
        ("Accept", "b"),
    ]
    kept = upstream_headers(proxy(("Content-Length", "12")), {}, keep_length=True)
    assert kept["Content-Length"] == "12"


def test_response_headers_keep_repeats_and_drop_hop_by_hop() -> None:
    headers = proxy(
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Encoding", "gzip"),
        ("Connection", "close"),
    )
    assert list(response_headers(headers).items()) == [
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Content-Encoding", "gzip"),
    ]


def test_record_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from worker.gateway import command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(
        ["--upstream", "http://llm:8000", "--record", "--run-idle-s", "30",
         "--record-spool-dir", "/var/spool/gw"]
    )  # fmt: skip
    gateway = command.settings_from_args(args).gateway
    assert gateway.record is True and gateway.run_idle_s == 30.0
    assert str(gateway.record_spool_dir) == "/var/spool/gw"
    monkeypatch.setenv("WORKER_GATEWAY__RECORD", "true")
    monkeypatch.setenv("WORKER_GATEWAY__RECORD_MAX_CALLS", "50")
    args = parser.parse_args(["--upstream", "http://llm:8000"])
    gateway = command.settings_from_args(args).gateway
    assert gateway.record is True and gateway.record_max_calls == 50
    assert gateway.run_idle_s == 600.0 and gateway.record_stream_usage is True


# --- relayed responses -------------------------------------------------------------------------


class _Transport(asyncio.Transport):
    """Keeps every write, as the socket would get it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


async def _writes_of(response_class: type[web.StreamResponse]) -> list[bytes]:
    transport = _Transport()
    protocol = mock.Mock(transport=transport)
    writer = StreamWriter(protocol, asyncio.get_running_loop())
    request = make_mocked_request(
        "POST", "/v1/chat/completions", writer=writer, transport=transport, protocol=protocol
    )
    response = response_class(
        status=200, headers={"Content-Type": "application/json", "Content-Length": "11"}
    )
    await response.prepare(request)
    await response.write(b'{"ok": true')
    await response.write_eof()
    return transport.writes


async def test_a_relayed_response_sends_its_headers_with_its_first_body_bytes() -> None:
    one = await _writes_of(_HeadersWithBody)
    assert len(one) == 1  # one write, one TCP segment to the caller
    assert one[0].startswith(b"HTTP/1.1 200 OK\r\n") and one[0].endswith(b'\r\n\r\n{"ok": true')
    two = await _writes_of(web.StreamResponse)  # aiohttp's default: headers at prepare()
    assert b"".join(two) == one[0] and len(two) == 2


def _chunked_request() -> tuple[web.BaseRequest, _Transport]:
    transport = _Transport()
    protocol = mock.Mock(transport=transport, _drain_helper=mock.AsyncMock())
    writer = StreamWriter(protocol, asyncio.get_running_loop())
    request = make_mocked_request(
        "POST", "/v1/chat/completions", writer=writer, transport=transport, protocol=protocol
    )
    return request, transport


async def _relayed(parts: list[bytes]) -> tuple[bool, list[bytes], int]:
    """Relay an upstream body that arrives in `parts` (the last with its end) to a chunked
    response; (complete, the caller's writes, writes made before the last part arrived)."""
    loop = asyncio.get_running_loop()
    content = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=loop)
    upstream = mock.Mock(content=content)
    request, transport = _chunked_request()
    response = _HeadersWithBody(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    relay = UpstreamRelay(GatewayConfig(upstream="http://llm:8000"), GatewayMetrics())
    task = asyncio.create_task(relay._relay(request, upstream, response, None))
    for part in parts[:-1]:
        content.feed_data(part)
        await asyncio.sleep(0)
    before_last = len(transport.writes)
    content.feed_data(parts[-1])
    content.feed_eof()
    return await task, transport.writes, before_last


async def test_a_relayed_answer_ends_in_the_write_of_its_last_bytes() -> None:
    # a chunked JSON answer that arrives whole (as Dynamo's frontend sends one): headers,
    # body and the chunked terminator in one write, done before the handler returns
    complete, writes, _ = await _relayed([b'{"ok": true}'])
    assert complete and len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b'\r\n\r\nc\r\n{"ok": true}\r\n0\r\n\r\n')
    # one that arrives in parts is still relayed part by part; the end leaves with the last
    complete, writes, before_last = await _relayed([b'{"ok": ', b"true}"])
    assert complete and before_last == 1 and len(writes) == 2
    assert writes[0].endswith(b'\r\n\r\n7\r\n{"ok": \r\n')
    assert writes[1] == b"5\r\ntrue}\r\n0\r\n\r\n"
