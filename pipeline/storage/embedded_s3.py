"""A real S3 server (moto) on 127.0.0.1, for `storage.embedded: true` jobs, the demo and tests.

The server runs in a child process so requests go over HTTP exactly as they would to MinIO or
AWS. The child exits when `stop()` is called, when this process exits (atexit), and also when
this process dies without running atexit (SIGKILL): a watchdog thread in the child polls its
parent pid. Dummy credentials are handed only to this server's clients, never to os.environ.
"""

from __future__ import annotations

import atexit
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time

from op4ksr.extras import check_installed
from pipeline.storage import S3Credentials, Storage, open_storage

# Runs in the child: exit when the parent goes away, then serve moto until killed.
_CHILD = """
import os, sys, threading, time
parent = int(sys.argv[1])
def watch_parent():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch_parent, daemon=True).start()
from moto.server import main
main(sys.argv[2:])
"""

REGION = "us-east-1"  # buckets are created without a location constraint


class EmbeddedS3:
    """A moto S3 server in a child process; `with EmbeddedS3() as s3: s3.endpoint_url`."""

    credentials = S3Credentials("embedded-access-key", "embedded-secret-key")

    def __init__(self, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 60.0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"host {host!r} is not loopback: the embedded server has no auth")
        self.host = host
        self._requested_port = port
        self.port = 0
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen | None = None
        self._log_path = ""

    @property
    def endpoint_url(self) -> str:
        if self._process is None:
            raise RuntimeError("EmbeddedS3 is not running: call start() or use it as a context manager")
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmbeddedS3:
        """Start the server and wait until it answers; a no-op if it is already running."""
        if self._process is not None:
            return self
        check_installed("moto", "demo", "the embedded S3 server (storage.embedded=true, configs/local.yaml)")
        # A free port can be taken by someone else between our probe and the server's bind.
        for _ in range(3):
            self.port = self._requested_port or _free_port(self.host)
            self._spawn()
            if self._wait_until_serving():
                atexit.register(self.stop)
                # The log only explains a failed start; unlinked now, nothing is left behind
                # even if this process is SIGKILLed (the child writes on to the unlinked file).
                self._remove_log()
                return self
            log = self._log_tail()
            self.stop()
            if self._requested_port:
                break
        raise RuntimeError(f"moto S3 server did not start on {self.host}:{self.port}:\n{log}")

    def _spawn(self) -> None:
        fd, self._log_path = tempfile.mkstemp(prefix="op4ksr-moto-", suffix=".log")
        # The log is a file, not a pipe: moto logs every request and a full pipe would block it.
        with os.fdopen(fd, "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(os.getpid()), "-H", self.host, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_until_serving(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
                conn.request("GET", "/")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def _log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self._log_path, errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server and remove its log; safe to call twice."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._remove_log()

    def _remove_log(self) -> None:
        if self._log_path:
            try:
                os.remove(self._log_path)
            except OSError:
                pass
            self._log_path = ""

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def create_bucket(self, name: str) -> None:
        """Create bucket `name` (3-63 characters, as real S3 requires); an existing one is kept."""
        if not 3 <= len(name) <= 63:
            raise ValueError(f"bucket name {name!r} must be 3-63 characters: S3 refuses others")
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass

    def client(self):
        """A plain boto3 S3 client for this server, for set-up and checks outside `Storage`."""
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.credentials.access_key_id,
            aws_secret_access_key=self.credentials.secret_access_key,
        )

    def open_storage(self, uri: str, *, max_attempts: int = 5) -> Storage:
        """A Storage for `s3://bucket/prefix/` on this server."""
        return open_storage(
            uri,
            endpoint_url=self.endpoint_url,
            region=REGION,
            max_attempts=max_attempts,
            credentials=self.credentials,
        )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
