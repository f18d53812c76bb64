"""`op4ksr compare` end to end: a moto S3 catalog, three variants (two op4ksr settings, one spandrel
checkpoint), the real backfill per variant, then the page (opened in Chromium) and the table."""
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.actors.test_peers import save_random_esrgan
from tests.chromium import CHROMIUM, Chromium

REPO = Path(__file__).resolve().parents[2]
# (name, (h, w), format): two formats, a few sizes
CATALOG = [("a/small.png", (20, 28), "PNG"), ("a/wide.png", (16, 40), "PNG"), ("b/photo.jpg", (32, 24), "JPEG"),
           ("b/tall.jpg", (36, 20), "JPEG"), ("c/big.png", (48, 40), "PNG"), ("c/tiny.jpg", (12, 16), "JPEG")]


def _image(h, w, fmt, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    smooth = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (h + w))], -1)
    pixels = np.clip(smooth + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def _compare(s3_server, bucket, esrgan, ray_dir, *extra):
    # a Ray of its own: no RAY_ADDRESS, and a temp dir where no other Ray on the machine left its address
    env = os.environ | {"AWS_ACCESS_KEY_ID": s3_server.credentials.access_key_id,
                        "AWS_SECRET_ACCESS_KEY": s3_server.credentials.secret_access_key,
                        "RAY_ADDRESS": "", "RAY_TMPDIR": ray_dir}
    args = [sys.executable, "-m", "jobs.cli", "compare", "--sample", "4",
            "--variant", "backproject sr.fidelity=backproject", "--variant", "wavelet sr.fidelity=wavelet sr.fidelity_levels=2",
            "--variant", f"esrgan peer.kind=spandrel peer.path={esrgan}",
            f"input.uri=s3://{bucket}/in/", f"output.uri=s3://{bucket}/cmp/",
            f"storage.endpoint_url={s3_server.endpoint_url}", "pipeline.ray_num_cpus=4", "actors.torch_threads=1",
            "actors.warmup_shapes=[[32,32]]", "compare.crops=3", *extra]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # two compare runs of three variants, each starting its own Ray: ~9 min on a loaded 2-core machine
def test_compare_runs_three_variants_over_one_sample_and_writes_page_and_table(s3_server, s3_bucket, tmp_path):
    store = s3_server.open_storage(f"s3://{s3_bucket}/in/")
    for i, (key, (h, w), fmt) in enumerate(CATALOG):
        store.put(key, _image(h, w, fmt, i))
    esrgan = save_random_esrgan(tmp_path / "esrgan-random.safetensors")

    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    done = _compare(s3_server, s3_bucket, esrgan, ray_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    out = s3_server.open_storage(f"s3://{s3_bucket}/cmp/")
    table = pd.read_parquet(io.BytesIO(out.get("compare/comparison.parquet")))
    assert sorted(set(table["variant"])) == ["backproject", "esrgan", "wavelet"]
    assert len(table) == 12 and (table["status"] == "ok").all()  # 4 sampled inputs x 3 variants
    sample = sorted(set(table["key"]))
    assert {k.rsplit(".", 1)[1] for k in sample} == {"png", "jpg"}  # both formats are in the sample
    for name in ("backproject", "wavelet", "esrgan"):
        images = sorted(o.key for o in out.iter_objects() if o.key.startswith(f"variants/{name}/images/"))
        assert len(images) == 4
    rows = table.set_index(["variant", "key"])
    assert rows.loc[("esrgan", sample[0]), "model_id"].startswith("spandrel:esrgan-random@")
    # back-projection makes the output downscale to the input: its LR-consistency is the highest
    means = table.groupby("variant")["lr_consistency_psnr"].mean()
    assert means["backproject"] > means["wavelet"] and means["backproject"] > means["esrgan"]
    assert table["total_usd"].notna().all() and (table["gpu_seconds"] > 0).all()

    # a rerun reuses every variant's images: each new run skips the 4 sampled inputs
    again = _compare(s3_server, s3_bucket, esrgan, ray_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped 4") >= 3, again.stdout
    rerun = pd.read_parquet(io.BytesIO(out.get("compare/comparison.parquet")))
    pd.testing.assert_frame_equal(rerun[["variant", "key", "run_id", "total_usd"]],
                                  table[["variant", "key", "run_id", "total_usd"]])

    page = tmp_path / "comparison.html"
    page.write_bytes(out.get("compare/comparison.html"))
    text = page.read_text()
    assert text.count("<figure>") == 3 * 5  # 3 images: input, bicubic and the 3 variants
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium when run as root")
    browser = Chromium(tmp_path / "profile")
    try:
        problems, external = browser.load(page.as_uri())
        shot = tmp_path / "comparison.png"
        browser.screenshot(shot)
    finally:
        browser.close()
    assert problems == [] and external == []
    assert len(np.unique(np.asarray(Image.open(shot).convert("L")))) > 50  # crops drew, not a blank page
    if os.environ.get("OP4KSR_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["OP4KSR_SCREENSHOT_DIR"]) / "comparison.png")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compare_over_local_folders_writes_each_variant_in_its_own_folder(tmp_path):
    """The README's example: local folders in and out (each variant's output is a folder, not a key)."""
    for i, (key, (h, w), fmt) in enumerate(CATALOG[:3]):
        (tmp_path / "scans" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "scans" / key).write_bytes(_image(h, w, fmt, i))
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = os.environ | {"RAY_ADDRESS": "", "RAY_TMPDIR": ray_dir}
    args = [sys.executable, "-m", "jobs.cli", "compare", "--config", "local", "--sample", "2",
            "--variant", "backproject sr.fidelity=backproject", "--variant", "wavelet sr.fidelity=wavelet",
            f"input.uri={tmp_path / 'scans'}", f"output.uri={tmp_path / 'compare'}", "pipeline.ray_num_cpus=4",
            "actors.warmup_shapes=[[32,32]]"]
    try:
        done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=800)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for variant in ("backproject", "wavelet"):
        images = sorted((tmp_path / "compare" / "variants" / variant / "images").rglob("*.png"))
        reports = sorted((tmp_path / "compare" / "variants" / variant / "reports").rglob("*.json"))
        assert len(images) == 2 and len(reports) == 2, (variant, images, reports)
    table = pd.read_parquet(tmp_path / "compare" / "compare" / "comparison.parquet")
    assert sorted(table["variant"].unique()) == ["backproject", "wavelet"] and len(table) == 4
    assert (tmp_path / "compare" / "compare" / "comparison.html").read_text().count("<img") >= 2
