"""The embedded demo backfill as a Ray job: `ray start --head`, `ray job submit`, SUCCEEDED.

This is how the cluster launcher (docs/DEPLOY.md §11) and KubeRay run the backfill: the driver
is started by Ray's job supervisor with RAY_ADDRESS set and must join that cluster rather than
start its own.

The head runs in its own session with its own temp dir and ports, and teardown ends only that
session's processes: `ray stop` would end every Ray on the machine, the session fixture's and
other people's included. Its token auth is on (RAY_AUTH_MODE=token, as docs/DEPLOY.md
advises) with a token of its own, so the result does not hang on ~/.ray/auth_token. No
`--working-dir` upload: the driver runs on this machine, where the
project is installed in the virtualenv it shares with this test.
"""
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

BIN = Path(sys.executable).parent  # the virtualenv's ray and op4ksr
START_TIMEOUT_S, JOB_TIMEOUT_S = 180, 720  # generous: 2 shared cores here


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid:
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def _end_session(sid: int) -> None:
    """SIGTERM every process of session `sid` (the head, GCS, raylet, workers), SIGKILL what stays."""
    processes = _session_processes(sid)
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive + _session_processes(sid):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def ray_head():
    """(`ray job <command> <args>` against a private local Ray head with 4 logical CPUs, its temp dir)."""
    # A short root: Ray's unix sockets live under it and socket paths are limited to 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="op4ksr-ray-", dir="/tmp")
    names = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port", "object-manager-port",
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port")
    ports = dict(zip(names, _free_ports(len(names))))
    token = Path(temp_dir) / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))  # for the head and each `ray job`
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=4", "--disable-usage-stats",
         "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
         *(f"--{name}={port}" for name, port in ports.items())],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            assert head.poll() is None, f"ray start exited with {head.returncode}; logs under {temp_dir}"
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=5):
                    break
            except urllib.error.HTTPError:  # 401 without the token: it is up
                break
            except OSError:
                assert time.time() < deadline, f"the Ray dashboard did not come up at {address}"
                time.sleep(1)
        yield (lambda command, *args: _ray_job(env, address, command, *args)), Path(temp_dir)
    finally:
        _end_session(head.pid)  # start_new_session: the head's pid is its session id
        head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _ray_job(env: dict, address: str, command: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), "job", command, "--address", address, *args],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_demo_backfill_succeeds_as_a_submitted_ray_job(ray_head, tmp_path):
    ray_job, head_temp_dir = ray_head
    job_id = f"op4ksr-demo-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "demo-output"
    submitted = ray_job("submit", "--submission-id", job_id, "--no-wait",
                        "--", str(BIN / "op4ksr"), "demo", "--out", str(out))
    assert submitted.returncode == 0, submitted.stderr

    deadline, status = time.time() + JOB_TIMEOUT_S, ""
    while time.time() < deadline:
        reply = ray_job("status", job_id)
        # `ray job status` prints "Job '<id>' succeeded" (failed, was stopped) once it has ended,
        # "Status for job '<id>': RUNNING" before.
        match = re.search(r"Job '[^']+' (succeeded|failed|was stopped)|Status for job '[^']+': (\w+)",
                          reply.stdout + reply.stderr)
        ended = {"succeeded": "SUCCEEDED", "failed": "FAILED", "was stopped": "STOPPED"}
        status = (ended[match.group(1)] if match.group(1) else match.group(2)) if match else ""
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(3)
    logs = ray_job("logs", job_id).stdout
    assert status == "SUCCEEDED", f"job {job_id} ended {status or 'nowhere'}:\n{logs[-4000:]}"

    summary = dict(re.findall(r"^(inputs listed|ok|failed)\s+(\S+)$", logs, re.MULTILINE))
    assert summary == {"inputs listed": "6", "ok": "6", "failed": "0"}, logs[-4000:]
    assert len(list((out / "images").rglob("*.png"))) == 6
    assert "6 of 6 outputs are signed (C2PA, test identity" in logs  # and `op4ksr verify` passes them:
    verified = subprocess.run([str(BIN / "op4ksr"), "verify", str(out / "images"), "--trust",
                               str(tmp_path / "demo-identity" / "test-ca.pem")], capture_output=True, text=True)
    assert verified.returncode == 0 and "6 checked, 6 passed, 0 failed" in verified.stderr, verified.stderr
    # The driver joined this head (RAY_ADDRESS) instead of starting a Ray of its own: the model
    # actor's worker (the model stage, UpscaleActor inside pipeline/fleet/model_stage.py's WatchedStage)
    # logged under the head's temp dir.
    worker_logs = (head_temp_dir / "session_latest" / "logs").glob("worker-*")
    assert any("WatchedStage" in path.read_text(errors="replace") for path in worker_logs)
