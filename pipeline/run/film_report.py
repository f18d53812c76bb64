"""The per-shot report of a --ray run, put together on the driver from its chunks' reports.

Each chunk's actor stores its ChunkRunner report at runs/<id>/chunks/<sequence>/s<shot>-c<chunk>.json:
the temporal measures of the chunk's frames, the frames it filled from bicubic, and the middle row
of each output as a PNG strip (`profile_png`). At the end of the run the driver reads them back,
frame by frame, into runs/<id>/shots/<sequence>.json (one entry per shot of this run's cut list),
the temporal profile runs/<id>/shots/<sequence>.profile.png, and the page runs/<id>/report.html
(pipeline/ledger/film_page.py).

Where a frame's figures come from: the chunk that owns it (lead-in frames belong to the chunk
before), from this run's report, or, for a chunk this run did not schedule because its frames were
done before, from the newest earlier run that stored one covering the frame. A frame no run
reported is a gap (null) in the curves and is listed in `unreported_frames`. The measures restart
with each chunk, as the actor runs it: the flicker of a chunk's first and last frame is against one
neighbour, and the warping error into a chunk without a lead-in is not measured (null).
"""
from __future__ import annotations

import base64
import io
import json
from collections import defaultdict

import numpy as np

from op4ksr.video.charts import profile_png
from pipeline.manifest.layout import RUNS, run_key
from pipeline.storage import ObjectNotFoundError

CHUNKS_DIR, CUTS_DIR, SHOTS_DIR = "chunks/", "cuts/", "shots/"
MARGIN = 6  # px left of the temporal profile: red where a frame was filled, yellow where a shot starts
SHOT_START, FILLED = (240, 200, 0), (220, 0, 0)  # the margin's colours
PAGE_PROFILE_WIDTH = 256  # px: the page's copy of a profile, so a 10,000-frame reel's page stays a few MB


def profile_b64(runner) -> str:
    """A ChunkRunner's output middle rows as a base64 PNG, one row per frame of the chunk (for its report)."""
    return base64.b64encode(profile_png(runner.profile)).decode("ascii")


def _run_objects(outputs) -> list:
    runs = outputs.spec.child(RUNS).open()
    try:
        return list(runs.iter_objects([".json"]))
    except (FileNotFoundError, ObjectNotFoundError):
        return []


def chunk_report_keys(objects, run_id: str) -> dict[str, list[str]]:
    """Sequence id -> the keys (under runs/) of every run's chunk reports for it: this run's first, then
    the others' newest first, so a frame takes its figures from the first report that owns it."""
    found = defaultdict(list)
    for obj in objects:
        run, _, rest = obj.key.partition("/")
        if rest.startswith(CHUNKS_DIR) and "/" in rest[len(CHUNKS_DIR):]:
            sequence_id = rest[len(CHUNKS_DIR):].rsplit("/", 1)[0]
            found[sequence_id].append((run != run_id, -obj.last_modified.timestamp(), obj.key))
    return {sequence_id: [key for *_, key in sorted(entries)] for sequence_id, entries in found.items()}


def _owned_frames(chunk: dict, run_id: str) -> dict:
    """Frame -> its figures, for the frames the chunk owns (after its lead-in)."""
    report, frames, lead_in = chunk["report"], chunk["frames"], chunk["lead_in"]
    warping, bicubic_warping = report["warping_error"], report["bicubic_warping_error"]
    failed = {f["frame"]: f["error"] for f in report["failed_frames"]}
    flagged = set(report["flicker_flagged"])
    rows = None
    if chunk.get("profile_png"):
        from PIL import Image

        rows = np.asarray(Image.open(io.BytesIO(base64.b64decode(chunk["profile_png"]))).convert("RGB"))
    owned = {}
    for p in range(lead_in, len(frames)):
        owned[frames[p]] = {
            "flicker": report["flicker_curve"][p], "bicubic_flicker": report["bicubic_flicker_curve"][p],
            "warping": warping[p - 1] if p and warping else None,
            "bicubic_warping": bicubic_warping[p - 1] if p and bicubic_warping else None,
            "flagged": p in flagged, "failed": failed.get(p), "run_id": run_id,
            "profile": rows[p] if rows is not None and p < len(rows) else None}
    return owned


def _mean(values: list) -> float | None:
    finite = [v for v in values if v is not None and v == v]
    return float(np.mean(finite)) if finite else None


def shot_entry(number: int, frames: list[int], figures: dict) -> dict:
    """One shot's entry: its curves over `frames` (null where no report has the frame), flags and fills."""
    got = [figures.get(f) for f in frames]
    value = lambda name, g: None if g is None else g[name]  # noqa: E731
    warping = [value("warping", g) for g in got[1:]]
    bicubic = [value("bicubic_warping", g) for g in got[1:]]
    measured = any(w is not None for w in warping)
    out_err, bic_err = _mean(warping), _mean(bicubic)
    return {"shot": number, "start": frames[0], "end": frames[-1] + 1, "frames": len(frames),
            "flicker_curve": [value("flicker", g) for g in got],
            "bicubic_flicker_curve": [value("bicubic_flicker", g) for g in got],
            "flicker_flagged": [f for f, g in zip(frames, got) if g and g["flagged"]],
            "warping_error": warping if measured else [], "bicubic_warping_error": bicubic if measured else [],
            "mean_warping_error": out_err, "mean_bicubic_warping_error": bic_err,
            "warping_error_vs_bicubic": out_err / bic_err if out_err is not None and bic_err else None,
            "failed_frames": [{"frame": f, "error": g["failed"], "filled_from": "bicubic"}
                              for f, g in zip(frames, got) if g and g["failed"]],
            "unreported_frames": [f for f, g in zip(frames, got) if g is None],
            "from_runs": sorted({g["run_id"] for g in got if g})}


def _shot_frames(cut_list: dict) -> list[list[int]]:
    """Each shot's frame numbers (a sequence's) or indices (a video's), from the cut list's [first, last]."""
    return [list(range(first, last + 1)) for first, last in cut_list["shots"]]


def sequence_report(outputs, run_id: str, cut_list: dict, report_keys: list[str],
                    flicker_threshold: float) -> tuple[dict, list[np.ndarray | None]]:
    """(the sequence's per-shot report, each frame's output middle row in frame order, None if unreported)."""
    runs = outputs.spec.child(RUNS).open()
    figures = {}
    for key in reversed(report_keys):  # the first key's figures win: this run's, then the newest run's
        chunk = json.loads(runs.get(key))
        figures.update(_owned_frames(chunk, key.partition("/")[0]))
    shots = [shot_entry(n, frames, figures) for n, frames in enumerate(_shot_frames(cut_list))]
    report = {"sequence": cut_list.get("sequence") or cut_list.get("video"), "run_id": run_id,
              "frames": cut_list["frames"], "cuts": cut_list["cuts"],
              "settings": {"flicker_threshold": flicker_threshold},
              "frames_failed": sum(len(s["failed_frames"]) for s in shots),
              "frames_flagged": sum(len(s["flicker_flagged"]) for s in shots),
              "frames_unreported": sum(len(s["unreported_frames"]) for s in shots), "shots": shots}
    rows = [(figures.get(f) or {}).get("profile") for frames in _shot_frames(cut_list) for f in frames]
    return report, rows


def profile_image(report: dict, rows: list, max_width: int | None = None) -> bytes | None:
    """The temporal profile PNG: one output middle row per frame, top to bottom, black where unreported,
    area-resized to at most `max_width` px wide (the page's copy); a left margin marks a shot's first
    frame (yellow) and a frame filled from bicubic (red)."""
    known = [r for r in rows if r is not None]
    if not known:
        return None
    width = max(r.shape[0] for r in known)
    body = np.zeros((len(rows), width, 3), np.uint8)
    for y, row in enumerate(rows):
        if row is not None:
            body[y, :row.shape[0]] = row
    if max_width and width > max_width:
        from PIL import Image

        body = np.asarray(Image.fromarray(body).resize((max_width, len(rows)), Image.Resampling.BOX))
    image = np.concatenate([np.zeros((len(rows), MARGIN, 3), np.uint8), body], axis=1)
    y = 0
    for shot in report["shots"]:
        image[y, :MARGIN] = SHOT_START
        for failed in shot["failed_frames"]:
            image[y + failed["frame"] - shot["start"], :MARGIN] = FILLED
        y += shot["frames"]
    return profile_png(list(image))


def write_film_report(outputs, run_id: str, summary: dict, flicker_threshold: float) -> str:
    """Write each sequence's and video's shots JSON and profile, and the run's page; the page's key."""
    from pipeline.ledger.film_page import render_film_page, shots_chart

    objects = _run_objects(outputs)
    report_keys = chunk_report_keys(objects, run_id)
    runs = outputs.spec.child(RUNS).open()
    cut_prefix = f"{run_id}/{CUTS_DIR}"
    sequences = []
    for obj in sorted(objects, key=lambda o: o.key):
        if not (obj.key.startswith(cut_prefix) and obj.key.endswith(".json")):
            continue
        sequence_id = obj.key[len(cut_prefix):-len(".json")]
        report, rows = sequence_report(outputs, run_id, json.loads(runs.get(obj.key)),
                                       report_keys.get(sequence_id, []), flicker_threshold)
        outputs.put(run_key(run_id, f"{SHOTS_DIR}{sequence_id}.json"), json.dumps(report, indent=1).encode(),
                    "application/json")
        profile = profile_image(report, rows)
        if profile is not None:
            outputs.put(run_key(run_id, f"{SHOTS_DIR}{sequence_id}.profile.png"), profile, "image/png")
        sequences.append((report, shots_chart(report), profile_image(report, rows, PAGE_PROFILE_WIDTH)))
    key = run_key(run_id, "report.html")
    outputs.put(key, render_film_page(summary, sequences).encode(), "text/html; charset=utf-8")
    return key
