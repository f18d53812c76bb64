"""The embedded moto server: it serves S3 over HTTP and never outlives its owner."""

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.storage.embedded_s3 import EmbeddedS3


def is_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie nobody reaps counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until_gone(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_gone(pid):
            return True
        time.sleep(0.1)
    return False


def test_the_server_stops_with_its_context(s3_server):
    with EmbeddedS3() as server:
        pid = server._process.pid
        server.create_bucket("ctx-bucket")
        assert server.client().list_buckets()["Buckets"][0]["Name"] == "ctx-bucket"
        assert server.endpoint_url != s3_server.endpoint_url
    assert wait_until_gone(pid)
    with pytest.raises(RuntimeError, match="not running"):
        server.endpoint_url
    server.stop()  # twice is fine


def test_the_server_dies_with_a_sigkilled_owner():
    # atexit does not run on SIGKILL; the child's watchdog must notice its parent is gone.
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from pipeline.storage.embedded_s3 import EmbeddedS3; s = EmbeddedS3().start(); "
         "print(s._process.pid, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        server_pid = int(owner.stdout.readline())
        assert not is_gone(server_pid)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert wait_until_gone(server_pid)


def test_bucket_names_follow_s3_length_rules(s3_server):
    for name in ("in", "x" * 64):
        with pytest.raises(ValueError, match="3-63"):
            s3_server.create_bucket(name)
    s3_server.create_bucket("out")
    s3_server.create_bucket("out")  # again: kept


def test_only_loopback_hosts_are_allowed():
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedS3(host="0.0.0.0")


def test_dummy_credentials_stay_out_of_the_environment(s3_server):
    assert s3_server.credentials.access_key_id not in os.environ.values()
