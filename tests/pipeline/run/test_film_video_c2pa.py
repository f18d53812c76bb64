"""C2PA on `op4ksr video --ray`: with provenance.cert_chain and provenance.private_key set, each muxed output
video carries a manifest as the local path's does (op4ksr.video.provenance_tags.sign_video); the fleet writes
Matroska, so the manifest is the sidecar videos/<name>.mkv.c2pa stored beside it, read by c2pa's Reader."""
import pytest

from actors.film import FilmChunkActor
from op4ksr.provenance.identity import SigningIdentityError
from op4ksr.provenance.lineage import GENERATIVE
from op4ksr.provenance.throwaway_identity import make_test_identity
from op4ksr.provenance.verify import verify_output
from pipeline.run.film_run import run_film
from tests.pipeline.run.test_film_run import _spec
from tests.pipeline.run.test_film_video_run import _clip

pytest.importorskip("c2pa")


def test_a_fleet_video_output_carries_its_c2pa_manifest_in_a_sidecar(tmp_path, ray_local):
    _clip(tmp_path / "in" / "reel" / "clip.mp4", count=4, cut=2)
    files = make_test_identity(tmp_path / "identity")
    signing = [f"provenance.cert_chain={files.cert_chain}", f"provenance.private_key={files.private_key}"]
    inp, out = str(tmp_path / "in"), tmp_path / "out"
    summary = run_film(_spec(inp, str(out), "signed", "video.chunk_frames=2", "video.chunk_overlap=0", *signing),
                       FilmChunkActor)
    video = summary["videos"][0]
    assert video["output"] == "videos/reel/clip.mkv" and video["c2pa"] == "sidecar"
    assert video["c2pa_manifest"].startswith("urn:c2pa:")
    target, sidecar = out / "videos/reel/clip.mkv", out / "videos/reel/clip.mkv.c2pa"
    data, store = target.read_bytes(), sidecar.read_bytes()
    verdict = verify_output(str(target), data, "video/x-matroska", sidecar=store,
                            trust_anchors_pem=files.trust_anchor.read_text())
    assert verdict.ok and verdict.digital_source_type == GENERATIVE, verdict.problem
    assert verdict.label == video["c2pa_manifest"]
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 1  # the sidecar's data hash covers every byte of the video
    assert verify_output(str(target), bytes(flipped), "video/x-matroska", sidecar=store).hash_binding == "mismatch"
    assert not list(out.rglob("*.signing")) and not list(out.rglob("*.part.mkv"))


def test_an_identity_that_cannot_sign_is_refused_before_anything_is_written(tmp_path):
    _clip(tmp_path / "in" / "clip.mp4", count=3, cut=3)
    files = make_test_identity(tmp_path / "identity")
    wrong = [f"provenance.cert_chain={files.cert_chain}", f"provenance.private_key={files.cert_chain}"]
    with pytest.raises(SigningIdentityError, match="provenance.private_key"):
        run_film(_spec(str(tmp_path / "in"), str(tmp_path / "out"), "unsigned", *wrong), FilmChunkActor)
    assert not (tmp_path / "out" / "runs").exists()
