"""Bounded retries against a loopback server that throttles or breaks replies off mid-body."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.storage import S3Credentials, StorageError, open_storage

SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
BODY = b"0123456789" * 10
CREDENTIALS = S3Credentials("fault-test-key-id", "fault-test-secret")


class FaultyS3(ThreadingHTTPServer):
    """Answers every GET with a fault for the first `faults` requests, then with BODY."""

    def __init__(self, fault: str, faults: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fault, self.faults, self.requests = fault, faults, 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            server.requests += 1
            faulty = server.requests <= server.faults
        if faulty and server.fault == "slowdown":
            self._reply(503, SLOW_DOWN)
        elif faulty and server.fault == "cut":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:10])
            self.wfile.flush()
            self.close_connection = True
        else:
            self._reply(200, BODY)

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"abc"')
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def faulty_s3(request):
    server = FaultyS3(*request.param)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def storage_for(server, max_attempts):
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    return open_storage("s3://fault-bucket/in/", endpoint_url=endpoint, max_attempts=max_attempts,
                        credentials=CREDENTIALS)


@pytest.mark.parametrize("faulty_s3", [("slowdown", 1)], indirect=True)
def test_a_throttled_request_is_retried(faulty_s3):
    assert storage_for(faulty_s3, max_attempts=2).get("a.jpg") == BODY
    assert faulty_s3.requests == 2


@pytest.mark.parametrize("faulty_s3", [("slowdown", 99)], indirect=True)
def test_throttling_past_max_attempts_is_a_clear_error(faulty_s3):
    with pytest.raises(StorageError, match=r"get s3://fault-bucket/in/a\.jpg failed: SlowDown.*2 attempt") as caught:
        storage_for(faulty_s3, max_attempts=2).get("a.jpg")
    assert faulty_s3.requests == 2
    assert caught.value.code == "SlowDown"
    assert not any(s in str(caught.value) for s in CREDENTIALS.secrets())


@pytest.mark.parametrize("faulty_s3", [("cut", 2)], indirect=True)
def test_a_reply_cut_off_mid_body_is_fetched_again(faulty_s3):
    storage = storage_for(faulty_s3, max_attempts=3)
    assert storage.get("a.jpg") == BODY
    assert faulty_s3.requests == 3
    assert storage.stats.snapshot().get_requests == 3


@pytest.mark.parametrize("faulty_s3", [("cut", 99)], indirect=True)
def test_replies_cut_off_every_time_end_in_a_storage_error(faulty_s3):
    with pytest.raises(StorageError, match=r"get s3://fault-bucket/in/a\.jpg failed: the reply broke off in 2"):
        storage_for(faulty_s3, max_attempts=2).get("a.jpg")
    assert faulty_s3.requests == 2
