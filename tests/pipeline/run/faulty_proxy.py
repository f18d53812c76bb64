"""A loopback HTTP proxy in front of an S3 server (the moto one) that injects faults.

Faults: `500` (InternalError), `503` (ServiceUnavailable), `slowdown` (503 SlowDown, S3's
throttling reply), `reset` (the connection is reset before any reply) and `cut` (a 200 whose
body breaks off). They are given by `Rule`s (this method and key, the first N times or always)
and, for every other request, at random with probability `fraction` but never twice in a
row for the same request, so a client with a few retries always gets through.
tests/pipeline/storage/test_storage_faults.py fakes the server for single calls; this sits in front
of a real one, so a whole run (boto3 and pyarrow clients, driver and Ray workers) meets them.
"""
from __future__ import annotations

import collections
import http.client
import random
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

ERROR_BODIES = {
    "500": (500, b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"),
    "503": (503, b"<Error><Code>ServiceUnavailable</Code><Message>Please reduce your request rate.</Message></Error>"),
    "slowdown": (503, b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"),
}
FAULTS = (*ERROR_BODIES, "reset", "cut")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect", "upgrade", "te"}


@dataclass
class Rule:
    method: str  # GET, PUT, HEAD, ...
    path_suffix: str  # the end of the unquoted request path, e.g. "/bucket/in/a.png"
    fault: str
    times: int = -1  # faults for the first `times` matching requests; -1: every one

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"fault {self.fault!r} is not one of {FAULTS}")


class FaultyProxy(ThreadingHTTPServer):
    """`with FaultyProxy(upstream, rules, fraction) as proxy: proxy.endpoint_url`."""

    daemon_threads = True

    def __init__(self, upstream: str, rules: list[Rule] = (), fraction: float = 0.0, seed: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rules, self.fraction, self.random = list(rules), fraction, random.Random(seed)
        self.lock = threading.Lock()
        self.matched = collections.Counter()  # rule index -> matching requests seen
        self.requests = collections.Counter()  # (method, path) -> requests seen
        self.injected: list[tuple[str, str, str]] = []  # (method, path, fault)
        self._last_faulted: set[tuple[str, str]] = set()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()

    def choose_fault(self, method: str, path: str, target: str) -> str | None:
        with self.lock:
            self.requests[(method, path)] += 1
            fault = None
            for index, rule in enumerate(self.rules):
                if rule.method == method and path.endswith(rule.path_suffix):
                    self.matched[index] += 1
                    fault = rule.fault if rule.times < 0 or self.matched[index] <= rule.times else None
                    break
            else:
                request = (method, target)
                if request not in self._last_faulted and self.random.random() < self.fraction:
                    fault = self.random.choice(("500", "slowdown", "reset"))
                    self._last_faulted.add(request)
                else:
                    self._last_faulted.discard(request)
            if fault:
                self.injected.append((method, path, fault))
            return fault

    def count(self, method: str, path_suffix: str) -> int:
        """Requests seen with this method whose path ends with `path_suffix`."""
        with self.lock:
            return sum(n for (m, p), n in self.requests.items() if m == method and p.endswith(path_suffix))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultyProxy

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = self.server.choose_fault(self.command, unquote(urlsplit(self.path).path), self.path)
        if fault == "reset":
            # SO_LINGER 0: close() sends a TCP RST, as a dropped load balancer connection does
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if fault in ERROR_BODIES:
            status, payload = ERROR_BODIES[fault]
            self._reply(status, [("Content-Type", "application/xml")], payload)
            return
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            reply = upstream.getresponse()
            payload = reply.read()
            head_length = reply.getheader("Content-Length") if self.command == "HEAD" else None
            headers = [(k, v) for k, v in reply.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}]
        finally:
            upstream.close()
        if fault == "cut" and len(payload) > 1:
            self.send_response(reply.status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._reply(reply.status, headers, payload, head_length)

    def _reply(self, status: int, headers, payload: bytes, length: str | None = None) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", length or str(len(payload)))  # a HEAD reply keeps the object's
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay
