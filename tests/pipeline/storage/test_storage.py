"""The same behaviour from both backends: a local folder and S3 over HTTP (a moto server)."""

import os
import pickle
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.storage import (
    IOCounters,
    IOStats,
    ObjectNotFoundError,
    S3Credentials,
    StorageError,
    StorageSpec,
    normalise_uri,
    open_storage,
    redact,
    safe_key,
)

SECRET_ID = "AKIAEXAMPLEKEYID0042"
SECRET_KEY = "wJalr-secret-value-that-must-never-show"


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    """An empty Storage; S3 ones live under prefix/ of a fresh bucket, so siblings can exist."""
    if request.param == "local":
        root = tmp_path / "store"
        root.mkdir()
        return open_storage(str(root))
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return server.open_storage(f"s3://{bucket}/prefix/")


def put_all(storage, keys, workers=8):
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda k: storage.put(k, k.encode()), keys))


def listed_keys(storage, **kwargs):
    return [o.key for o in storage.iter_objects(**kwargs)]


# -- round trip --------------------------------------------------------------------------


def test_put_get_head_exists_delete_round_trip(storage):
    assert storage.head("photos/cat.jpg") is None
    assert not storage.exists("photos/cat.jpg")
    storage.put("photos/cat.jpg", b"first", content_type="image/jpeg")
    storage.put("photos/cat.jpg", b"meow meow")  # replaces

    assert storage.get("photos/cat.jpg") == b"meow meow"
    info = storage.head("photos/cat.jpg")
    assert (info.key, info.size) == ("photos/cat.jpg", 9)
    assert info.etag and info.last_modified.utcoffset().total_seconds() == 0
    assert storage.exists("photos/cat.jpg")
    assert [o.key for o in storage.iter_objects()] == ["photos/cat.jpg"]
    assert list(storage.iter_objects())[0].etag == info.etag

    storage.delete("photos/cat.jpg")
    storage.delete("photos/cat.jpg")  # deleting what is gone is fine
    assert not storage.exists("photos/cat.jpg")
    with pytest.raises(ObjectNotFoundError, match="photos/cat.jpg"):
        storage.get("photos/cat.jpg")


def test_put_file_and_get_file_stream_through_disk(storage, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    storage.put_file("big/blob.bin", str(src))
    dst = tmp_path / "dst.bin"
    assert storage.get_file("big/blob.bin", str(dst)) == 3 << 20
    assert dst.read_bytes() == src.read_bytes()
    with pytest.raises(ObjectNotFoundError):
        storage.get_file("big/missing.bin", str(tmp_path / "never.bin"))


def test_keys_with_spaces_and_unicode_round_trip(storage):
    keys = ["a folder/my photo (1).jpg", "日本/写真.png", "émoji 🎨.webp", "plus+and%percent.tif"]
    put_all(storage, keys)
    assert listed_keys(storage) == sorted(keys)
    for key in keys:
        assert storage.get(key) == key.encode()


def test_uri_for_names_the_object(storage):
    uri = storage.uri_for("a b/c.jpg")
    if storage.spec.is_s3:
        assert uri == f"{storage.spec.uri}a b/c.jpg"
    else:
        assert uri == os.path.join(storage.spec.uri, "a b", "c.jpg")


def test_a_child_is_the_folder_under_the_prefix_with_keys_relative_to_it(storage):
    storage.put("runs/r1/summary.json", b"{}")
    storage.put("runs-other/x", b"x")
    for prefix in ("runs/r1/", "runs/r1", "/runs/r1/"):
        child = storage.child(prefix)
        assert child.spec == storage.spec.child(prefix) and child.get("summary.json") == b"{}"
        assert listed_keys(child) == ["summary.json"]
        assert child.uri_for("summary.json") == storage.uri_for("runs/r1/summary.json")
    assert listed_keys(storage.child("runs")) == ["r1/summary.json"]  # not runs-other/
    assert storage.child("runs").spec.uri == normalise_uri(storage.spec.uri.rstrip("/") + "/runs/")


# -- listing -----------------------------------------------------------------------------


def test_listing_is_in_s3_key_order_across_pages(storage):
    # '-' < '.' < '/' in byte order: a folder 'd' sorts as 'd/', after files 'd-x' and 'd.x'.
    keys = []
    for i in range(1200):
        folder = f"d{i % 3}"
        keys.append([f"{folder}/{i:04d}.jpg", f"{folder}-{i:04d}.png", f"{folder}.{i:04d}.jpg"][i % 3])
    put_all(storage, keys)
    before = storage.stats.snapshot()

    assert listed_keys(storage) == sorted(keys)
    if storage.spec.is_s3:  # S3 pages hold at most 1000 keys
        assert (storage.stats.snapshot() - before).list_requests == 2


def test_listing_stays_inside_the_prefix(storage, request, tmp_path):
    storage.put("inside.jpg", b"x")
    if storage.spec.is_s3:
        s3_server = request.getfixturevalue("s3_server")
        bucket = storage.spec.uri.split("/")[2]
        s3_server.client().put_object(Bucket=bucket, Key="prefix-sibling.jpg", Body=b"x")
        s3_server.client().put_object(Bucket=bucket, Key="prefix/folder-marker/", Body=b"")
    else:
        (tmp_path / "outside.jpg").write_bytes(b"x")
    assert listed_keys(storage) == ["inside.jpg"]


def test_extension_filter_is_case_insensitive(storage):
    put_all(storage, ["a.JPG", "b.png", "c.txt", "d.jpeg", "e.jpg.txt", "f/g.Png"])
    assert listed_keys(storage, extensions=["jpg", ".png"]) == ["a.JPG", "b.png", "f/g.Png"]
    assert listed_keys(storage, extensions=".jpeg") == ["d.jpeg"]
    with pytest.raises(ValueError, match="extensions"):
        listed_keys(storage, extensions=[])


@pytest.mark.parametrize(
    "start_after, expected",
    [
        ("a/1.jpg", ["a/2.jpg", "b.jpg", "c/1.jpg"]),
        ("a", ["a/1.jpg", "a/2.jpg", "b.jpg", "c/1.jpg"]),
        ("a0", ["b.jpg", "c/1.jpg"]),  # '0' > '/': the whole folder a/ is behind
        ("b.jpg", ["c/1.jpg"]),
        ("z", []),
    ],
)
def test_start_after_resumes_a_listing(storage, start_after, expected):
    put_all(storage, ["a/1.jpg", "a/2.jpg", "b.jpg", "c/1.jpg"])
    assert listed_keys(storage, start_after=start_after) == expected


def test_listing_a_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        list(open_storage(str(tmp_path / "nope")).iter_objects())


# -- key safety --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, normal",
    [("a/b.jpg", "a/b.jpg"), ("a//b.jpg", "a/b.jpg"), ("./a/./b.jpg", "a/b.jpg"),
     ("my photo é.jpg", "my photo é.jpg"), ("a/...jpg", "a/...jpg"), ("..jpg", "..jpg")],
)
def test_safe_key_normalises(key, normal):
    assert safe_key(key) == normal


@pytest.mark.parametrize(
    "key, reason",
    [("", "empty"), ("../x.jpg", r"'\.\.'"), ("a/../../x.jpg", r"'\.\.'"), ("/etc/passwd", "starts with"),
     ("a\\..\\x.jpg", "backslash"), ("a\x00b.jpg", "control"), ("a\nb.jpg", "control"),
     ("a/", "folder"), (".", "names no object"), (None, "empty")],
)
def test_safe_key_refuses_keys_that_could_escape(key, reason):
    with pytest.raises(ValueError, match=reason):
        safe_key(key)


@pytest.mark.parametrize("key", ["../escape.jpg", "/abs.jpg", "a//b.jpg", "a\\b.jpg"])
def test_writes_refuse_unsafe_or_unnormalised_keys(storage, key):
    with pytest.raises(ValueError):
        storage.put(key, b"x")
    with pytest.raises(ValueError):
        storage.delete(key)
    assert listed_keys(storage) == []


def test_local_storage_refuses_paths_through_symlinks_out_of_its_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"s")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    storage = open_storage(str(root))
    with pytest.raises(ValueError, match="outside"):
        storage.put("link/x.jpg", b"x")
    with pytest.raises(ValueError, match="outside"):
        storage.get("link/secret.txt")
    assert listed_keys(storage) == []  # symlinks are not listed
    assert not (outside / "x.jpg").exists()


def test_s3_reads_take_odd_input_keys_verbatim(s3_server, s3_bucket):
    # Input catalogs can hold keys no writer of ours would make; they must still be readable.
    s3_server.client().put_object(Bucket=s3_bucket, Key="in/a//b.jpg", Body=b"odd")
    s3_server.client().put_object(Bucket=s3_bucket, Key="in/../up.jpg", Body=b"up")
    storage = s3_server.open_storage(f"s3://{s3_bucket}/in/")
    assert listed_keys(storage) == ["../up.jpg", "a//b.jpg"]
    assert storage.get("a//b.jpg") == b"odd"
    assert storage.get("../up.jpg") == b"up"


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    storage = open_storage(str(tmp_path))
    storage.put("a/b.jpg", b"1" * 1000)
    storage.put("a/b.jpg", b"2" * 10)
    assert sorted(os.listdir(tmp_path / "a")) == ["b.jpg"]
    assert (tmp_path / "a" / "b.jpg").read_bytes() == b"2" * 10
    (tmp_path / "a" / ".op4ksr-tmp-leftover").write_bytes(b"crash")  # a killed writer's remains
    assert listed_keys(storage) == ["a/b.jpg"]


# -- counters ----------------------------------------------------------------------------


def test_io_counters_count_requests_and_bytes(storage):
    storage.put("a.jpg", b"abc")
    storage.put("b.jpg", b"hello")
    before = storage.stats.snapshot()
    assert storage.get("b.jpg") == b"hello"
    storage.head("a.jpg")
    list(storage.iter_objects())
    storage.delete("a.jpg")
    spent = storage.stats.snapshot() - before
    assert spent == IOStats(get_requests=1, list_requests=1, head_requests=1, delete_requests=1, bytes_in=5)
    assert before == IOStats(put_requests=2, bytes_out=8)


def test_io_counters_are_thread_safe():
    counters = IOCounters()

    def work():
        for _ in range(500):
            counters.record("get", bytes_in=2)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counters.snapshot() == IOStats(get_requests=4000, bytes_in=8000)
    with pytest.raises(ValueError, match="kind"):
        counters.record("copy")


# -- errors, credentials, specs ----------------------------------------------------------


def test_check_writable_creates_a_local_folder_and_refuses_an_unwritable_one(tmp_path):
    open_storage(str(tmp_path / "new" / "out")).check_writable()
    assert (tmp_path / "new" / "out").is_dir() and os.listdir(tmp_path / "new" / "out") == []
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StorageError, match="not writable"):
        open_storage(str(tmp_path / "file" / "out")).check_writable()


def test_check_writable_on_a_missing_bucket_names_it(s3_server, s3_bucket):
    s3_server.open_storage(f"s3://{s3_bucket}/out/").check_writable()
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist.*create it"):
        s3_server.open_storage("s3://no-such-bucket/out/").check_writable()


def test_credentials_never_appear_in_reprs_or_errors(s3_server):
    creds = S3Credentials(SECRET_ID, SECRET_KEY, "session-token-secret")
    storage = open_storage("s3://no-such-bucket/x/", endpoint_url=s3_server.endpoint_url, credentials=creds)
    texts = [repr(storage), repr(storage.spec), repr(creds), str(storage.spec)]
    for call in (storage.check_writable, lambda: storage.get("a.jpg"), lambda: list(storage.iter_objects())):
        with pytest.raises(StorageError) as caught:
            call()
        texts += [str(caught.value), repr(caught.value)]
        assert "s3://no-such-bucket/x/" in str(caught.value)
    assert redact(f"key {SECRET_ID} rejected", creds.secrets()) == "key <hidden> rejected"
    leaked = [t for t in texts if any(s in t for s in creds.secrets())]
    assert leaked == []


def test_endpoint_passwords_are_hidden_in_reprs():
    spec = StorageSpec("s3://bucket/p/", endpoint_url="http://user:pa55word@minio:9000")
    assert "pa55word" not in repr(spec) and "minio:9000" in repr(spec)


def test_an_unreachable_endpoint_fails_clearly_after_bounded_retries():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    storage = open_storage(
        "s3://some-bucket/p/", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=2,
        credentials=S3Credentials(SECRET_ID, SECRET_KEY),
    )
    with pytest.raises(StorageError, match=r"get s3://some-bucket/p/a\.jpg failed: cannot reach") as caught:
        storage.get("a.jpg")
    assert SECRET_KEY not in str(caught.value)


def test_a_storage_pickles_as_its_spec_and_reopens(storage):
    storage.put("a.jpg", b"abc")  # creates the S3 client, which must not travel
    clone = pickle.loads(pickle.dumps(storage))
    assert type(clone) is type(storage) and clone.spec == storage.spec
    assert clone.get("a.jpg") == b"abc"
    assert clone.stats.snapshot() == IOStats(get_requests=1, bytes_in=3)
    assert pickle.loads(pickle.dumps(storage.spec)).open().get("a.jpg") == b"abc"


@pytest.mark.parametrize(
    "uri, normal",
    [("s3://bucket/pre", "s3://bucket/pre/"), ("s3://bucket", "s3://bucket/"),
     ("s3://bucket//a/b/", "s3://bucket/a/b/"), ("file:///tmp/x%20y", "/tmp/x y"), ("/tmp/a/../b", "/tmp/b")],
)
def test_uris_are_normalised(uri, normal):
    assert normalise_uri(uri) == normal


@pytest.mark.parametrize(
    "uri, reason",
    [("", "empty"), ("gs://bucket/x", "scheme"), ("s3://ab/x", "3-63"), ("file://host/x", "host")],
)
def test_bad_uris_are_refused(uri, reason):
    with pytest.raises(ValueError, match=reason):
        open_storage(uri)


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="max_attempts"):
        StorageSpec("s3://bucket/", max_attempts=0)
    with pytest.raises(ValueError, match="http"):
        StorageSpec("s3://bucket/", endpoint_url="minio:9000")


def test_put_tree_uploads_a_folder_with_its_marker_last(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    for name in ("model_index.json", "vae/config.json", "transformer/b.safetensors", "a.txt"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    store = open_storage(str(tmp_path / "out"))
    order = []
    put_file = store.put_file
    monkeypatch.setattr(store, "put_file", lambda key, path, *a: (order.append(key), put_file(key, path, *a)))
    assert store.put_tree(folder, "step-1/", last=["model_index.json"]) == 4
    assert order == ["step-1/a.txt", "step-1/transformer/b.safetensors", "step-1/vae/config.json",
                     "step-1/model_index.json"]
    assert store.get("step-1/vae/config.json") == b"vae/config.json"
