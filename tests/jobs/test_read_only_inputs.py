"""Inputs are read-only (issue 27, item 1): no command writes where its inputs are, and an output
location inside the input is never listed, for `upscale`, `backfill` and `compare`, local and S3.
Files are checked by SHA-256 before and after."""
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import jobs.compare
from jobs.cli import main as cli


def _png(path, size=(12, 16), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def _hashes(folder) -> dict[str, str]:
    """relative path -> SHA-256 of every file under `folder`."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("how", ["same", "dot", "symlink"])
def test_upscale_into_its_own_input_folder_changes_no_byte_even_with_overwrite(tmp_path, capsys, monkeypatch, how):
    scans = tmp_path / "scans"
    _png(scans / "a.png", seed=1)
    _png(scans / "sub" / "b.png", seed=2)
    before = _hashes(scans)
    (tmp_path / "link").symlink_to(scans)
    monkeypatch.chdir(scans)
    out = {"same": str(scans), "dot": "./", "symlink": str(tmp_path / "link")}[how]
    assert cli(["upscale", str(scans), "--out", out, "--overwrite", "--quiet"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"op4ksr upscale: --out {Path(out)} is the input folder {scans}") and "no input was changed" in line
    assert _hashes(scans) == before  # not a byte changed, nothing added


def test_upscale_of_a_file_onto_itself_is_refused_and_keeps_its_bytes(tmp_path, capsys):
    _png(tmp_path / "a.png", seed=3)
    before = _hashes(tmp_path)
    assert cli(["upscale", str(tmp_path / "a.png"), "--out", str(tmp_path), "--overwrite", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"refused: {tmp_path / 'a.png'}: InputsAreReadOnly" in err
    assert _hashes(tmp_path) == before


def test_upscale_rerun_with_its_output_inside_the_input_never_reads_its_outputs(tmp_path, capsys):
    scans = tmp_path / "in"
    _png(scans / "a.png", seed=4)
    _png(scans / "b" / "c.png", seed=5)
    originals = _hashes(scans)
    for _ in range(2):
        assert cli(["upscale", str(scans), "--out", str(scans / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "0 of 2 images written" in err.splitlines()[-1]  # the rerun found the same two inputs, both done
    assert not (scans / "out" / "out").exists()  # no 16x image, no deeper folder
    assert sorted(p.relative_to(scans / "out").as_posix() for p in (scans / "out").rglob("*.png")) == ["a.png", "b/c.png"]
    assert Image.open(scans / "out" / "a.png").size == (64, 48)
    assert {k: v for k, v in _hashes(scans).items() if not k.startswith("out/")} == originals


def test_upscale_out_naming_an_existing_file_is_one_line_before_the_model_loads(tmp_path, capsys):
    _png(tmp_path / "a.png")
    (tmp_path / "taken").write_text("a file")
    # a model path that does not exist: had the model been loaded first, the error would name it
    assert cli(["upscale", str(tmp_path / "a.png"), "--out", str(tmp_path / "taken"), "--model", "./no-such-model"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == f"op4ksr upscale: --out {tmp_path / 'taken'} is an existing file, not a folder: give a folder (created if missing)"


def _backfill_dry_run(input_uri, output_uri, *extra):
    return cli(["backfill", "--dry-run", "--config", "local", f"input.uri={input_uri}", f"output.uri={output_uri}",
                "run.id=dry", *extra])


def test_backfill_into_its_own_input_is_refused_before_anything_is_written(tmp_path, capsys):
    _png(tmp_path / "scans" / "a.png")
    before = _hashes(tmp_path)
    for output in (tmp_path / "scans", f"{tmp_path}/scans/./", tmp_path / "scans" / "sub" / ".."):
        assert _backfill_dry_run(tmp_path / "scans", output) == 1
        assert "is the input location" in _one_line(capsys.readouterr().err)
    # an input inside an area the run writes (images/ of the output) is refused the same way
    _png(tmp_path / "out" / "images" / "x.png")
    assert _backfill_dry_run(tmp_path / "out" / "images", tmp_path / "out") == 1
    assert "where op4ksr writes" in _one_line(capsys.readouterr().err)
    assert _hashes(tmp_path) == before | {"out/images/x.png": _hashes(tmp_path)["out/images/x.png"]}


def test_backfill_with_its_output_inside_the_input_never_lists_it_local(tmp_path):
    scans = tmp_path / "scans"
    _png(scans / "a.png")
    _png(scans / "out" / "images" / "a.png")  # what an earlier run wrote
    _png(scans / "out" / "runs" / "old" / "crop.png")
    assert _backfill_dry_run(scans, scans / "out") == 0
    listed = pq.read_table(scans / "out" / "runs" / "dry" / "inputs.parquet").column("key").to_pylist()
    assert listed == ["a.png"]


def test_backfill_with_its_output_inside_the_input_never_lists_it_s3(s3_server, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.credentials.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.credentials.secret_access_key)
    store = s3_server.open_storage(f"s3://{s3_bucket}/x/")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    for key in ("a.png", "out/images/a.png", "out/runs/old/crop.png"):
        store.put(key, buf.getvalue())
    endpoint = f"storage.endpoint_url={s3_server.endpoint_url}"
    assert _backfill_dry_run(f"s3://{s3_bucket}/x/", f"s3://{s3_bucket}/x/out/", endpoint) == 0
    listed = pq.read_table(io.BytesIO(store.get("out/runs/dry/inputs.parquet"))).column("key").to_pylist()
    assert listed == ["a.png"]
    assert _backfill_dry_run(f"s3://{s3_bucket}/x", f"s3://{s3_bucket}/x/", endpoint, "run.id=dry2") == 1


class _Stop(Exception):
    pass


def test_a_compare_rerun_inside_its_input_samples_only_the_inputs(tmp_path, monkeypatch, ray_local, capsys):
    scans = tmp_path / "scans"
    for i in range(3):
        _png(scans / f"img-{i}.png", seed=i)
    for variant in ("a", "b"):  # what a first comparison left under output.uri=scans/cmp
        for i in range(3):
            _png(scans / "cmp" / "variants" / variant / "images" / f"img-{i}.png", seed=10 + i)
    sampled = []

    def first_variant_only(args, extra, name, overrides, root, sample):
        sampled.extend(obj.key for obj in sample)
        raise _Stop  # before any variant runs: the sample is what this test checks

    monkeypatch.setattr(jobs.compare, "_run_variant", first_variant_only)
    with pytest.raises(_Stop):
        jobs.compare.main(["--config", "local", f"input.uri={scans}", f"output.uri={scans / 'cmp'}", "--sample", "30",
                           "--variant", "a sr.fidelity=backproject", "--variant", "b sr.fidelity=wavelet"])
    assert sampled == ["img-0.png", "img-1.png", "img-2.png"]
    assert os.path.isdir(scans / "cmp" / "variants")
