"""Every input handled, nothing lost (issue 5; docs/RELIABILITY.md has the case -> test table).

Fast cases call the stages directly (no Ray); the end-to-end cases run whole backfills over a
real moto S3 server and a local Ray, and are marked slow.
"""
import dataclasses
import io
import json
import logging
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile
from PIL import Image

from jobs.config import ConfigError, load_config, to_yaml
from op4ksr.images import png16
from actors.upscaler import UpscaleActor
from pipeline.run.backfill import run_backfill
from pipeline.run.fetch import FETCHED_SCHEMA, FetchContext, FetchDecode
from pipeline.manifest.layout import UnsafeKeyError, output_image_key, report_key
from jobs.specs import build_run_spec, size_policy
from pipeline.storage import S3Credentials, StorageError, StorageSpec, open_storage
from tests.badinputs import HOSTILE_KEYS, corpus, encode, flat, multi_frame, noise, over_limit_input
from tests.icc_profiles import ADOBE_RGB, rgb_profile
from tests.pipeline.run.faulty_proxy import FaultyProxy, Rule

SECRET = S3Credentials("AKIAOP4KSRLEAKCHECK7", "op4ksr-leak-check-secret-Zq9xWv2Lm8")


def _spec(input_uri, output_uri, endpoint, credentials, run_id, *overrides):
    cfg = load_config([], [f"input.uri={input_uri}", f"output.uri={output_uri}", f"storage.endpoint_url={endpoint}",
                           "actors.warmup_shapes=[[64,64]]", *overrides])
    return build_run_spec(cfg, run_id, to_yaml(cfg), credentials=credentials)


def _manifest(out_store, run_id):
    parts = sorted(o.key for o in out_store.iter_objects() if o.key.startswith(f"runs/{run_id}/manifest/"))
    rows = [row for key in parts for row in pq.read_table(io.BytesIO(out_store.get(key))).to_pylist()]
    assert len(rows) == len({r["key"] for r in rows}), "an input has more than one manifest row"
    return {r["key"]: r for r in rows}


# -- fast: the stages on their own ---------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(HOSTILE_KEYS))
def test_output_keys_for_hostile_input_keys_are_refused(key):
    for make in (lambda k: output_image_key(k, "png"), report_key):
        with pytest.raises(UnsafeKeyError, match=HOSTILE_KEYS[key]):
            make(key)


@pytest.mark.parametrize("key,expected", [("a b/ünï cödé.jpg", "images/a b/ünï cödé.png"),
                                          ("a//b/./c.tif", "images/a/b/c.png")])
def test_odd_but_harmless_keys_map_inside_the_images_prefix(key, expected):
    assert output_image_key(key, "png") == expected


def test_fetch_turns_every_bad_input_into_one_failed_record(tmp_path):
    cases = corpus() + [over_limit_input()]
    inputs = open_storage(str(tmp_path / "in"))
    for case in cases:
        inputs.put(case.key, case.data)
    fetch = FetchDecode(FetchContext(inputs.spec, StorageSpec(str(tmp_path / "out")), "r", "m", "p", "png",
                                     dataclasses.replace(size_policy(load_config()), max_megapixels=3.0)))
    # one block through the stage as Ray calls it: rows fetched on threads, one record per row, in order
    block = fetch(pa.table({"key": [case.key for case in cases], "etag": ["e"] * len(cases)}))
    assert block.schema == FETCHED_SCHEMA and block.column("key").to_pylist() == [case.key for case in cases]
    for case, record in zip(cases, block.to_pylist()):
        assert (record["status"], record["error_class"]) == ("failed", case.error_class), case.key
        assert re.search(case.message, record["error"]) and record["payload"] is None
    for key, message in HOSTILE_KEYS.items():  # never fetched: the key alone fails the input
        record = fetch.fetch_one({"key": key, "etag": "e"})
        assert (record["status"], record["error_class"], record["output_key"]) == ("failed", "UnsafeKeyError", None)
        assert re.search(message, record["error"]) and record["requests_get"] is None
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault,times,ok", [("slowdown", 2, True), ("500", 1, True), ("503", 2, True),
                                            ("reset", 2, True), ("cut", 1, True), ("slowdown", -1, False),
                                            ("500", -1, False), ("reset", -1, False)])
def test_object_store_faults_are_retried_a_bounded_number_of_times(s3_server, s3_bucket, fault, times, ok):
    rules = [Rule("GET", f"/{s3_bucket}/in/a.png", fault, times)]
    with FaultyProxy(s3_server.endpoint_url, rules) as proxy:
        storage = open_storage(f"s3://{s3_bucket}/in/", endpoint_url=proxy.endpoint_url, max_attempts=3,
                               credentials=SECRET)
        storage.put("a.png", b"image bytes" * 100)
        if ok:
            assert storage.get("a.png") == b"image bytes" * 100
            assert proxy.count("GET", "/in/a.png") == times + 1
        else:
            with pytest.raises(StorageError, match=r"get s3://.*/in/a\.png failed") as caught:
                storage.get("a.png")
            assert proxy.count("GET", "/in/a.png") == 3  # max_attempts, then a clear error
            assert not any(secret in str(caught.value) for secret in SECRET.secrets())


@pytest.mark.parametrize("override,message", [
    ("storage.max_attempts=0", "storage.max_attempts=0 must be at least 1"),
    ("storage.endpoint_url=localhost:9000", "storage.endpoint_url='localhost:9000' must start with http"),
    ("sr.min_output_side=0", "sr.min_output_side=0 must be at least 1"),
    ("sr.max_output_megapixels=0", "sr.max_output_megapixels=0 must be positive"),
    ("actors.num_gpus=-1", "actors.num_gpus=-1 must be 0 or more"),
    ("actors.num_cpus=0", "actors.num_cpus=0 must be positive"),
    ("actors.upload_threads=0", "actors.upload_threads=0 must be at least 1"),
    ("pipeline.decode_num_cpus=0", "pipeline.decode_num_cpus=0 must be positive"),
    ("pipeline.fetch_tasks=0", "pipeline.fetch_tasks=0 must be at least 1"),
    ("actors.start_timeout_s=0", "actors.start_timeout_s=0 must be positive"),
    ("pipeline.fetch_threads=0", "pipeline.fetch_threads=0 must be at least 1"),
    ("pipeline.max_attempts_per_input=0", "pipeline.max_attempts_per_input=0 must be at least 1"),
    ("report.threshold=-0.5", "report.threshold=-0.5 must be 0 or more"),
    ("input.extensions=[]", "input.extensions is empty"),
])
def test_config_values_are_validated_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config([], [override])


def test_saved_config_hides_a_password_in_the_endpoint():
    cfg = load_config([], ["storage.endpoint_url=http://minio-user:minio-pass-77@127.0.0.1:9000"])
    saved = to_yaml(cfg)
    assert "minio-pass-77" not in saved and "minio-user" not in saved and "127.0.0.1:9000" in saved


# -- end to end: bad inputs, hostile keys and fidelity in one run -------------------------------


def _fidelity_inputs() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "Archive Scanner Co", 6
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (255, 0, 0, 255)
    rgb16 = io.BytesIO()
    tifffile.imwrite(rgb16, np.random.default_rng(1).integers(0, 65536, (12, 16, 3)).astype(np.uint16),
                     photometric="rgb", compression="zlib")
    files = {
        "good/rgb.png": encode(noise(24, 32, 1), "PNG"),
        "good/a b/ünï cödé.png": encode(noise(16, 16, 2), "PNG"),
        "good/gray16.png": encode((np.arange(16 * 20).reshape(16, 20) * 200).astype(np.uint16), "PNG"),
        "good/alpha.png": encode(rgba, "PNG"),
        "good/adobe-rgb.png": encode(flat(16, 16, (200, 100, 50)), "PNG", icc_profile=rgb_profile(ADOBE_RGB)),
        "good/rotated.jpg": encode(noise(16, 24, 3), "JPEG", exif=exif.tobytes(), xmp=b"<x:xmpmeta/>"),
        "good/rgb16.tif": rgb16.getvalue(),
        "good/wide-10000x16.png": encode(flat(16, 10000), "PNG"),
    }
    files.update({f"frames/{name}": data for name, data in multi_frame().items()})
    return files


@pytest.mark.slow
def test_bad_inputs_and_hostile_keys_fail_alone_while_good_files_keep_their_fidelity(s3_server, s3_bucket,
                                                                                      ray_local, tmp_path):
    client, good, bad = s3_server.client(), _fidelity_inputs(), corpus() + [over_limit_input()]
    for key, data in [*good.items(), *((b.key, b.data) for b in bad), *((k, encode(noise(8, 8), "PNG"))
                                                                        for k in HOSTILE_KEYS)]:
        client.put_object(Bucket=s3_bucket, Key=f"in/{key}", Body=data)  # raw: S3 takes any key
    out_dir = tmp_path / "out"
    spec = _spec(f"s3://{s3_bucket}/in/", str(out_dir), s3_server.endpoint_url, s3_server.credentials, "mixed",
                 "sr.max_output_megapixels=3", "input.extensions=[.png,.jpg,.tif,.gif]")
    summary = run_backfill(spec, UpscaleActor)

    out = open_storage(str(out_dir))
    rows = _manifest(out, "mixed")
    assert summary.total == len(rows) == len(good) + len(bad) + len(HOSTILE_KEYS)
    assert (summary.ok, summary.failed) == (len(good), len(bad) + len(HOSTILE_KEYS))
    for case in bad:
        row = rows[case.key]
        assert (row["status"], row["error_class"]) == ("failed", case.error_class) and re.search(case.message, row["error"])
    for key, message in HOSTILE_KEYS.items():
        assert (rows[key]["status"], rows[key]["error_class"]) == ("failed", "UnsafeKeyError")
        assert re.search(message, rows[key]["error"])
    # nothing was written outside the output folder, and nothing into the input bucket
    assert all(Path(root).is_relative_to(out_dir) for root, _, files in os.walk(tmp_path) if files)
    assert all(o["Key"].startswith("in/") for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"])

    def output(key):
        assert rows[key]["status"] == "ok", rows[key]
        return (out_dir / rows[key]["output_key"]).read_bytes()

    assert Image.open(io.BytesIO(output("good/a b/ünï cödé.png"))).size == (64, 64)
    assert Image.open(io.BytesIO(output("good/gray16.png"))).mode == "I;16"
    assert Image.open(io.BytesIO(output("good/alpha.png"))).mode == "RGBA"
    assert Image.open(io.BytesIO(output("good/adobe-rgb.png"))).info["icc_profile"] == rgb_profile(ADOBE_RGB)
    assert rows["good/wide-10000x16.png"]["output_size"] == "40000x64"
    assert png16.header(output("good/rgb16.tif"))[2:4] == (16, 2)  # 16-bit RGB PNG
    rotated = Image.open(io.BytesIO(output("good/rotated.jpg")))
    exif = rotated.getexif()
    assert rotated.size == (64, 96) and exif[0x0112] == 1 and exif[0x010F] == "Archive Scanner Co"
    xmp = rotated.info["xmp"].decode()  # its packet (an unbound x: prefix, not XML) gives way to one with the label
    assert '<x:xmpmeta xmlns:x="adobe:ns:meta/">' in xmp and "<stRef:filePath>good/rotated.jpg<" in xmp
    provenance = json.loads(exif[0x010E])
    assert (provenance["model_id"], provenance["params_hash"]) == (rows["good/rotated.jpg"]["model_id"],
                                                                   rows["good/rotated.jpg"]["params_hash"])
    for name in multi_frame():
        frames = json.loads(Image.open(io.BytesIO(output(f"frames/{name}"))).info["op4ksr"])
        assert (frames["source_frames"], frames["frame_used"]) == (3, 0)


# -- end to end: object-store faults, and no secret anywhere ----------------------------------------


@pytest.mark.slow
def test_object_store_faults_are_retried_or_fail_one_row_and_no_secret_leaks(s3_server, s3_bucket, ray_local,
                                                                              caplog, capfd):
    caplog.set_level(logging.INFO)
    prefix = f"/{s3_bucket}"
    rules = [Rule("GET", f"{prefix}/in/get-slowdown-twice.png", "slowdown", 2),
             Rule("GET", f"{prefix}/in/get-500-once.png", "500", 1),
             Rule("GET", f"{prefix}/in/get-reset-once.png", "reset", 1),
             Rule("GET", f"{prefix}/in/get-cut-once.png", "cut", 1),
             Rule("GET", f"{prefix}/in/get-always-throttled.png", "slowdown"),
             Rule("PUT", f"{prefix}/out/images/put-500-once.png", "500", 1),
             Rule("PUT", f"{prefix}/out/images/put-always-reset.png", "reset")]
    names = [r.path_suffix.rsplit("/", 1)[1] for r in rules] + [f"plain-{i}.png" for i in range(3)]
    store = s3_server.open_storage(f"s3://{s3_bucket}/in/")
    for i, name in enumerate(names):
        store.put(name, encode(noise(16, 16, i), "PNG"))

    with FaultyProxy(s3_server.endpoint_url, rules, fraction=0.1, seed=5) as proxy:
        spec = _spec(f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out/", proxy.endpoint_url, SECRET, "faults",
                     "storage.max_attempts=3")
        summary = run_backfill(spec, UpscaleActor)

    out = s3_server.open_storage(f"s3://{s3_bucket}/out/")
    rows = _manifest(out, "faults")
    assert (summary.total, summary.ok, summary.failed) == (len(names), len(names) - 2, 2)
    throttled, reset = rows["get-always-throttled.png"], rows["put-always-reset.png"]
    assert throttled["error_class"] == "StorageError" and re.search(r"SlowDown.*after 3 attempt", throttled["error"])
    assert reset["error_class"] == "StorageError" and "put-always-reset.png failed" in reset["error"]
    assert proxy.count("GET", "/in/get-always-throttled.png") == 3 and proxy.count("PUT", "/put-always-reset.png") == 3
    assert len(proxy.injected) > len(rules)  # random faults met the driver and the workers too
    assert not out.exists("reports/put-always-reset.png.json")  # no report without its image

    # the secret is in no object written, no log line and no Ray log
    secrets = [s.encode() for s in SECRET.secrets()]
    for obj in s3_server.open_storage(f"s3://{s3_bucket}/").iter_objects():
        data = s3_server.open_storage(f"s3://{s3_bucket}/").get(obj.key)
        assert not any(s in data for s in secrets), obj.key
    captured = capfd.readouterr()
    logs = (caplog.text + captured.out + captured.err).encode()
    assert not any(s in logs for s in secrets)
    session = Path(ray_local._private.worker._global_node.get_session_dir_path()) / "logs"
    for path in (p for p in session.rglob("*") if p.is_file()):
        assert not any(s in path.read_bytes() for s in secrets), path


# -- end to end: an actor process killed mid-run ------------------------------------------------------


@pytest.mark.slow
def test_a_killed_actor_is_restarted_and_every_image_is_done_exactly_once(s3_server, s3_bucket, ray_local):
    count = 10
    store = s3_server.open_storage(f"s3://{s3_bucket}/in/")
    for i in range(count):
        store.put(f"img-{i:02d}.png", encode(noise(48, 48, i), "PNG"))
    out = s3_server.open_storage(f"s3://{s3_bucket}/out/")
    spec = _spec(f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out/", s3_server.endpoint_url, s3_server.credentials,
                 "actor-kill")
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(summary=run_backfill(spec, UpscaleActor)), daemon=True)
    runner.start()
    deadline = time.time() + 300
    while not _reports(out):
        assert runner.is_alive() and time.time() < deadline, "the run ended before an actor could be killed"
        time.sleep(0.1)
    first = json.loads(out.get(_reports(out)[0]))
    killed_pid = int(first["actor_id"].rsplit(":", 1)[1])
    os.kill(killed_pid, signal.SIGKILL)  # the actor's worker process, mid-run
    runner.join(timeout=600)
    assert not runner.is_alive(), "the run did not finish after its actor was killed"

    summary, rows = result["summary"], _manifest(out, "actor-kill")
    assert (summary.total, summary.ok, summary.failed) == (count, count, 0)
    assert sorted(rows) == [f"img-{i:02d}.png" for i in range(count)]
    assert len(_keys(out, "images/")) == count and len(_reports(out)) == count
    assert any(row["actor_id"] != first["actor_id"] for row in rows.values()), "no image was done after the kill"
    assert summary.actor_restarts >= 1  # the killed process was replaced (its Ray actor beat again with a new pid)
    for key in _keys(out, "images/"):
        Image.open(io.BytesIO(out.get(key))).load()  # every image is whole


def _keys(store, prefix):
    return sorted(o.key for o in store.iter_objects() if o.key.startswith(prefix))


def _reports(store):
    return _keys(store, "reports/")
