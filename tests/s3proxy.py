"""A loopback HTTP proxy in front of the S3 server that injects faults on demand: 503 SlowDown
answers, 500s, connections reset before any answer, or after the server did the request (its
answer lost). Tests point tierfs's endpoint at it."""

from __future__ import annotations

import collections
import http.client
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        #: (method, fault, count): fault is "503", "500", "403" (not retried by boto3),
        #: "reset", "lose" (the server does the request, the answer is lost: a reset),
        #: "delay", "hold" (held until ``release``, then reset, never done), "hold-after"
        #: (done, then its answer held until ``release`` and lost) or "pass" (no fault: a
        #: rule that lets the first requests through); count -1 means forever.
        self.rules: list[list] = []
        self.faults_served = 0
        #: Seconds a "delay" fault holds a request.
        self.delay = 0.5
        #: Multipart uploads aborted through the proxy: later requests on them get S3's
        #: answer, 404 NoSuchUpload (moto answers 500). With ``forget_completed``, completed
        #: uploads too, as S3-compatible servers that do not take a completion twice.
        self.gone_uploads: set[str] = set()
        self.forget_completed = False
        #: Answer a copy whose source is no longer the version it names 412, as S3 does
        #: (``x-amz-copy-source-if-match``; moto copies whatever is there).
        self.copy_if_match = False
        #: Requests that reached the proxy, by HTTP method (faults included).
        self.requests: collections.Counter[str] = collections.Counter()
        #: Requests being held ("hold", "hold-after") now, and what lets them go.
        self.held = 0
        self.released = threading.Event()
        #: Checksum headers (``x-amz-checksum-*``, ``x-amz-sdk-checksum-*``) and content
        #: encodings of the requests that reached the proxy: (method, header, value).
        self.checksum_headers: list[tuple[str, str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += chunk
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _handle(self) -> None:
                body = self._body()
                with proxy.lock:
                    proxy.requests[self.command] += 1
                    proxy.checksum_headers += [
                        (self.command, k.lower(), v) for k, v in self.headers.items()
                        if k.lower().startswith(("x-amz-checksum", "x-amz-sdk-checksum",
                                                 "x-amz-trailer", "content-encoding"))]
                upload = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get(
                    "uploadId", [None])[0]
                if upload in proxy.gone_uploads:
                    self._answer(404, "NoSuchUpload")
                    return
                fault = proxy._take(self.command)
                if fault == "delay":  # a slow bucket: answer, but late
                    time.sleep(proxy.delay)
                    fault = None
                if fault == "pass":
                    fault = None
                if fault in ("hold", "hold-after"):  # the client is killed meanwhile
                    if fault == "hold-after":
                        self._forward(body, upload)
                    with proxy.lock:
                        proxy.held += 1
                    proxy.released.wait(60)
                    fault = "reset"
                if fault == "lose":
                    self._forward(body, upload)
                if fault in ("reset", "lose"):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault in ("503", "500", "403"):
                    self._answer(int(fault), {"503": "SlowDown", "500": "InternalError",
                                              "403": "AccessDenied"}[fault])
                    return
                if proxy.copy_if_match and not self._source_matches():
                    self._answer(412, "PreconditionFailed")
                    return
                response, data = self._forward(body, upload)
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                # A HEAD answer has no body but tells the length of the object.
                length = response.getheader("Content-Length") if self.command == "HEAD" \
                    else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _source_matches(self) -> bool:
                """Whether a copy's source is the version its if-match names (path-style
                addressing); True for any other request."""
                wanted = self.headers.get("x-amz-copy-source-if-match")
                source = self.headers.get("x-amz-copy-source")
                if self.command != "PUT" or wanted is None or source is None:
                    return True
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port,
                                                  timeout=60)
                try:
                    path = "/" + urllib.parse.quote(urllib.parse.unquote(source).lstrip("/"))
                    conn.request("HEAD", path)  # (moto takes requests unsigned)
                    response = conn.getresponse()
                    response.read()
                    return response.getheader("ETag", "").strip('"') == wanted.strip('"')
                finally:
                    conn.close()

            def _answer(self, status: int, code: str) -> None:
                payload = (f"<?xml version='1.0'?><Error><Code>{code}</Code>"
                           f"<Message>injected</Message></Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _forward(self, body: bytes, upload: str | None
                         ) -> tuple[http.client.HTTPResponse, bytes]:
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "content-length")}
                headers["Content-Length"] = str(len(body))
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    if upload is not None and response.status < 300 and (
                            self.command == "DELETE"
                            or (self.command == "POST" and proxy.forget_completed)):
                        proxy.gone_uploads.add(upload)
                    return response, data
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, method: str, fault: str, count: int = -1) -> None:
        with self.lock:
            self.rules.append([method, fault, count])

    def heal(self) -> None:
        with self.lock:
            self.rules.clear()

    def release(self) -> None:
        """Let held requests go (each gets a reset connection)."""
        self.released.set()

    def _take(self, method: str) -> str | None:
        with self.lock:
            for rule in self.rules:
                if rule[0] == method and rule[2] != 0:
                    if rule[2] > 0:
                        rule[2] -= 1
                    self.faults_served += 1
                    return str(rule[1])
        return None

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
