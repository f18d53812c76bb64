"""Faces, text and the per-image evidence: planted changes flagged where they are; faithful upscales and the
shipped model not flagged; checks that cannot run give null fields with a reason."""
import shutil

import pytest
import torch

from op4ksr.errors import UserError
from op4ksr.loading import ModelSpec, load_model
from op4ksr.quality.contradiction import CELL_THRESHOLD, contradiction_maps
from op4ksr.quality.evidence import EvidenceOptions, evidence
from op4ksr.quality.faces import face_scores, find_faces
from op4ksr.quality.text import MissingTesseractError, check_tesseract, compare_readings, edit_distance, Word
from op4ksr.quality.text_regions import text_regions
from tests import planted

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="make installs tesseract-ocr")
CAPTION = ["Catalogue no. 1987", "Museum of Rockets", "Gift of J. Smith"]


@pytest.fixture(scope="module")
def astronaut():
    """(input (1, 3, 224, 256) holding one face, its bicubic + back-projection upscale x4)."""
    lr = planted.photo("astronaut", (0, 96, 224, 256))
    return lr, planted.back_projected(lr)


@pytest.fixture(scope="module")
def caption():
    """(input (1, 3, 40, 160): the caption at x4 down, its faithful upscale, the same with 1987 -> 1978)."""
    lr = planted.downscale(planted.caption(CAPTION))
    swapped_lr = planted.downscale(planted.caption([CAPTION[0].replace("1987", "1978"), *CAPTION[1:]]))
    return lr, planted.back_projected(lr), planted.back_projected(swapped_lr)


def test_a_smoothed_face_is_found_in_its_box(astronaut, one_torch_thread):
    lr, out = astronaut
    (top, left, height, width), = find_faces(lr[0])  # one frontal face, in input px
    box = (top * 4, left * 4, height * 4, width * 4)
    clean = face_scores(lr[0], contradiction_maps(out, lr)[0], out.shape[-2:])
    assert [f["top"] for f in clean["faces"]] == [box[0]] and clean["face_contradiction"] < 1.5
    airbrushed = planted.smoothed(out, box)
    result = contradiction_maps(airbrushed, lr)[0]
    faces = face_scores(lr[0], result, out.shape[-2:])
    assert faces["face_contradiction"] > 2 * CELL_THRESHOLD and faces["faces"][0]["score"] == result.worst_cell["score"]
    assert planted.within_one_cell(result.worst_cell, box)


def test_no_face_is_a_null_figure_with_a_reason():
    lr = planted.downscale(planted.photo("rocket"))
    faces = face_scores(lr[0], contradiction_maps(planted.bicubic(lr), lr)[0], (lr.shape[-2] * 4, lr.shape[-1] * 4))
    assert faces == {"faces": [], "face_contradiction": None, "faces_reason": "no frontal face found"}


def test_edit_distance_and_the_comparison_of_readings():
    assert edit_distance("1987", "1978") == 2 and edit_distance("", "abc") == 3 and edit_distance("cat", "cat") == 0
    read = [Word("Gift", 95, (10, 10, 20, 60)), Word("1987", 96, (10, 100, 20, 60)), Word("J,", 50, (40, 10, 20, 20))]
    out = [Word("Gift", 90, (11, 12, 20, 58)), Word("1978", 90, (9, 98, 21, 62))]
    assert compare_readings(read, out) == {
        "text_cer": 0.25, "text_words": 2, "text_reason": None,  # the unconfident "J," is not compared
        "changed_words": [{"input": "1987", "output": "1978", "top": 10, "left": 100, "height": 20, "width": 60}]}
    assert compare_readings(read[2:], out)["text_reason"] == "no confidently read words"


@needs_tesseract
def test_swapped_digits_in_a_caption_are_read_and_located(caption, one_torch_thread):
    lr, faithful, swapped = caption
    options = EvidenceOptions(text_check="on", faces="off")
    clean, bad = evidence(torch.cat([faithful, swapped]), torch.cat([lr, lr]), options=options)
    assert clean.fields["text_cer"] == 0.0 and clean.fields["text_words"] >= 8 and not clean.flagged
    assert [(w["input"], w["output"]) for w in bad.fields["changed_words"]] == [("1987", "1978")]
    assert bad.fields["text_cer"] > 0 and bad.flagged
    assert bad.fields["cpu_text_seconds"] > 0  # tesseract's own CPU time, for the ledger's CPU quality
    word = bad.fields["changed_words"][0]
    assert planted.within_one_cell(bad.fields["worst_cell"], (word["top"], word["left"], word["height"], word["width"]))
    assert bad.fields["contradicted_fraction"] > 0  # the map sees the changed strokes too
    assert bad.fields["worst_cell"]["score"] > 3 * clean.fields["worst_cell"]["score"]


@needs_tesseract
def test_auto_reads_only_where_the_detector_finds_lines(caption, one_torch_thread):
    lr, _, swapped = caption
    regions = text_regions(lr[0], swapped.shape[-2:])
    assert regions and all(top < 160 and left < 640 for top, left, _, _ in regions)
    bad, = evidence(swapped, lr, options=EvidenceOptions(text_check="auto", faces="off"))
    assert [(w["input"], w["output"]) for w in bad.fields["changed_words"]] == [("1987", "1978")]
    photo = planted.downscale(planted.photo("rocket"))
    assert text_regions(photo[0], (photo.shape[-2] * 4, photo.shape[-1] * 4)) == []
    nothing, = evidence(planted.bicubic(photo), photo, options=EvidenceOptions(text_check="auto", faces="off"))
    assert nothing.fields["text_cer"] is None and nothing.fields["text_reason"] == "no text found"


def test_checks_that_cannot_run_say_why_and_on_is_refused_without_its_tool(monkeypatch):
    lr = planted.downscale(planted.photo("camera"))
    off, = evidence(planted.bicubic(lr), lr, options=EvidenceOptions(text_check="off", faces="off"))
    assert off.fields["text_reason"] == "report.text_check is off" and off.fields["faces_reason"] == "report.faces is off"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    missing, = evidence(planted.bicubic(lr), lr, options=EvidenceOptions(text_check="auto", faces="off"))
    assert missing.fields["text_reason"] == "tesseract-ocr is not installed" and not missing.flagged
    with pytest.raises(MissingTesseractError, match="install Debian's 'tesseract-ocr'") as refused:
        EvidenceOptions(text_check="on").check_tools()
    assert "\n" not in str(refused.value)
    with pytest.raises(MissingTesseractError):
        check_tesseract()
    with pytest.raises(UserError, match="report.text_check 'sometimes' is unknown"):
        EvidenceOptions(text_check="sometimes")


@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea", "camera"])
def test_the_shipped_model_on_held_out_photos_is_not_flagged(name, one_torch_thread):
    # held-out crops (offline:heldout, never trained on), x4 antialiased-bicubic LR, the saved defaults
    hr = planted.photo(name, (64, 64, 128, 192))
    lr = planted.downscale(hr)
    model = _shipped_model()
    out = model.upscale(lr, hr.shape[-2:]).clamp(0, 1)
    result, = evidence(out, lr, options=EvidenceOptions(text_check="off"))
    assert result.fields["contradicted_fraction"] == 0.0 and not result.flagged
    assert result.fields["worst_cell"]["score"] < 0.5  # its back-projection step: far below the threshold


_MODEL = []


def _shipped_model():
    if not _MODEL:
        _MODEL.append(load_model(ModelSpec(source="tiny-trained", device="cpu")))
    return _MODEL[0]
