"""runs/<id>/report.html: one self-contained page about a run, for people rather than Parquet readers.

The page has the summary, the cost table and chart, the periodicity histogram, the flagged and
failed images, and a contact sheet of input vs output crops at 100%. Everything is inline: CSS
in a <style>, pictures as data: URIs, no script, so it opens from a bucket, a mail or a laptop.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import io

import jinja2
import numpy as np
import pandas as pd

from pipeline.ledger.cost import Prices, describe_prices
from pipeline.ledger.evidence_page import (EVIDENCE_COLUMNS, EVIDENCE_CSS, EVIDENCE_IMAGES, evidence_items,
                                           flagged_rows, has_evidence, render_evidence)
from pipeline.ledger.pictures import data_uri as _data_uri, open_image as _open, png_bytes as _png
from pipeline.ledger.totals import LedgerTotals
from pipeline.storage import Storage

CONTACT_SHEET_IMAGES = 12
CROP_PX = 48  # input pixels per side of a contact-sheet crop; the output crop covers the same region
TABLE_ROWS = 50

_TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>op4ksr run {{ run_id }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .2em .7em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f4f4f4; } td { font-variant-numeric: tabular-nums; }
.kv th { width: 16em; } .note { color: #666; } img.chart { max-width: 100%; }
.sheet { display: flex; flex-wrap: wrap; gap: 1.2em; }
.sheet figure { margin: 0; border: 1px solid #ddd; padding: .5em; background: #fafafa; }
.sheet img { image-rendering: pixelated; vertical-align: top; margin-right: .5em; }
.sheet figcaption { font-size: 12px; max-width: 300px; overflow-wrap: anywhere; }
.flagged { color: #b00; font-weight: bold; }
{{ evidence_css | safe }}</style></head>
<body>
<h1>op4ksr run {{ run_id }}</h1>
<p class="note">Generated {{ generated }} from the run's manifest and cost ledger (cost.parquet).</p>

<h2>Summary</h2>
<table class="kv">{% for name, value in summary_rows %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}</table>

<h2>Cost</h2>
<table class="kv">{% for name, value in cost_rows %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
<h3>By stage</h3>
{{ breakdown_html | safe }}
<img class="chart" alt="cost chart" src="{{ cost_chart }}">

<h2>Periodicity</h2>
<p>ap_excess: the output's periodicity at the token period above the input's own (docs/PERIODICITY.md);
images above {{ threshold }} are flagged.</p>
{% if histogram %}<img class="chart" alt="ap_excess histogram" src="{{ histogram }}">
{% else %}<p class="note">No processed images.</p>{% endif %}

<h2>Flagged images ({{ flagged_count }})</h2>
{% if flagged_html %}{{ flagged_html | safe }}{% else %}<p class="note">None.</p>{% endif %}

<h2>Evidence: is it the same picture? ({{ evidence_count }})</h2>
{{ evidence_html | safe }}

<h2>Failed images ({{ failed_count }})</h2>
{% if failed_html %}{{ failed_html | safe }}{% else %}<p class="note">None.</p>{% endif %}

<h2>Contact sheet</h2>
<p class="note">The same region three ways, each at 100% (one image pixel per screen pixel): the input, a
plain bicubic upscale of it, and the output; flagged images first, at most {{ sheet_limit }}. LR-consistency is
the PSNR of the output downscaled against the input (dB; higher: the output keeps the input's picture).</p>
<div class="sheet">{% for item in sheet %}
<figure><img alt="input crop" src="{{ item.input }}" width="{{ item.input_w }}" height="{{ item.input_h }}"><img
 alt="bicubic crop" src="{{ item.bicubic }}" width="{{ item.output_w }}" height="{{ item.output_h }}"><img
 alt="output crop" src="{{ item.output }}" width="{{ item.output_w }}" height="{{ item.output_h }}">
<figcaption>{{ item.key }}<br>input · bicubic · output<br>{{ item.sizes }} · ap_excess {{ item.ap_excess }}
· LR-consistency {{ item.lr_psnr }} dB
{% if item.flagged %}<span class="flagged">flagged</span>{% endif %}</figcaption></figure>
{% else %}<p class="note">No images to show.</p>{% endfor %}</div>
</body></html>
""")


FLAGGED_COLUMNS = ["key", "ap_excess", "ap_score_out", "ap_score_in", "dominant_period_px", "lr_consistency_psnr"]
FAILED_COLUMNS = ["key", "error_class", "error"]
SHEET_COLUMNS = ["key", "status", "flagged", "ap_excess", "lr_consistency_psnr", "output_key", "input_size",
                 "output_size"]
DIGEST_COLUMNS = sorted({*FLAGGED_COLUMNS, *FAILED_COLUMNS, *SHEET_COLUMNS, *EVIDENCE_COLUMNS})  # the manifest columns a page reads


class ReportDigest:
    """What the page shows of a manifest of any length, fed a batch at a time: the top flagged rows,
    the first failed rows, the contact sheet's candidates, the ap_excess histogram and counts.

    `ap_range` is (min, max, count) of the whole manifest's ap_excess (a first pass gives it), so the
    histogram's bins are the ones matplotlib would draw from all the values at once.
    """

    def __init__(self, ap_range: tuple[float, float, int]):
        low, high, count = ap_range
        self.edges = np.histogram_bin_edges([low, high], bins=min(40, max(5, count))) if count else None
        self.counts = np.zeros(0 if self.edges is None else len(self.edges) - 1)
        self.flagged_count = self.failed_count = 0
        self.flagged = pd.DataFrame(columns=FLAGGED_COLUMNS)
        self.failed = pd.DataFrame(columns=FAILED_COLUMNS)
        self.candidates = pd.DataFrame(columns=[*SHEET_COLUMNS, "flag"])
        self.evidence = pd.DataFrame(columns=EVIDENCE_COLUMNS)  # the most contradicted flagged rows
        self.evidence_count = self.evidence_checked = 0

    @classmethod
    def of(cls, manifest: pd.DataFrame) -> ReportDigest:
        values = manifest["ap_excess"].dropna()
        digest = cls((values.min(), values.max(), len(values)) if len(values) else (0.0, 0.0, 0))
        digest.add(manifest)
        return digest

    def add(self, manifest: pd.DataFrame) -> None:
        """Count one batch of manifest rows (DIGEST_COLUMNS at least)."""
        if self.edges is not None:
            self.counts += np.histogram(manifest["ap_excess"].dropna().to_numpy(np.float64), bins=self.edges)[0]
        flagged = manifest[manifest["flagged"].fillna(False).astype(bool)]
        self.flagged_count += len(flagged)
        self.flagged = _top(self.flagged, flagged[FLAGGED_COLUMNS], ["ap_excess"], [False], TABLE_ROWS)
        failed = manifest[manifest["status"] == "failed"]
        self.failed_count += len(failed)
        if len(self.failed) < TABLE_ROWS:
            self.failed = _concat(self.failed, failed[FAILED_COLUMNS]).head(TABLE_ROWS)
        if has_evidence(manifest):
            self.evidence_checked += int(manifest["evidence_flagged"].notna().sum())
            flagged_evidence = flagged_rows(manifest)[EVIDENCE_COLUMNS]
            self.evidence_count += len(flagged_evidence)
            self.evidence = flagged_rows(_concat(self.evidence, flagged_evidence)).head(EVIDENCE_IMAGES)
        ok = manifest.loc[manifest["status"] == "ok", SHEET_COLUMNS]
        ok = ok.assign(flag=ok["flagged"].fillna(False).astype(bool))
        self.candidates = _top(self.candidates, ok, ["flag", "ap_excess", "key"], [False, False, True],
                               CONTACT_SHEET_IMAGES)

    def histogram(self, threshold: float) -> bytes | None:
        """The ap_excess histogram's PNG, or None when no image has an ap_excess."""
        if self.edges is None:
            return None
        return periodicity_histogram(self.edges, self.counts, threshold)


def render_report(summary: dict, digest: ReportDigest, totals: LedgerTotals, prices: Prices,
                  threshold: float, sheet: list[dict], evidence: list[dict] = ()) -> str:
    """The page's HTML for a run's summary.json dict, its manifest digest, ledger totals and contact-sheet items."""
    cost = summary.get("cost") or {}
    histogram = digest.histogram(threshold)
    return _TEMPLATE.render(
        run_id=summary["run_id"], generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary_rows=_summary_rows(summary), cost_rows=_cost_rows(cost, prices),
        breakdown_html=_table(totals.stages(), {"amount": "{:.4g}", "usd": "{:.6f}", "share": "{:.1%}"}),
        cost_chart=_data_uri(totals.chart("prefix")), threshold=threshold,
        histogram=_data_uri(histogram) if histogram else "",
        flagged_count=digest.flagged_count,
        flagged_html=_table(digest.flagged, {c: "{:.4f}" for c in ("ap_excess", "ap_score_out", "ap_score_in")}
                            | {"dominant_period_px": "{:.1f}", "lr_consistency_psnr": "{:.2f}"}),
        failed_count=digest.failed_count, failed_html=_table(digest.failed, {}),
        sheet=sheet, sheet_limit=CONTACT_SHEET_IMAGES, evidence_css=EVIDENCE_CSS, evidence_count=digest.evidence_count,
        evidence_html=render_evidence(list(evidence), flagged=digest.evidence_count, checked=digest.evidence_checked,
                                      known=digest.evidence_checked > 0),
    )


def write_report(run_storage: Storage, summary: dict, manifest: pd.DataFrame, ledger: pd.DataFrame, prices: Prices,
                 threshold: float, inputs: Storage, outputs: Storage) -> str:
    """Render report.html from a manifest and ledger held in memory (small runs, tests); its uri."""
    return write_report_digest(run_storage, summary, ReportDigest.of(manifest), LedgerTotals.of(ledger), prices,
                               threshold, inputs, outputs)


def write_report_digest(run_storage: Storage, summary: dict, digest: ReportDigest, totals: LedgerTotals,
                        prices: Prices, threshold: float, inputs: Storage, outputs: Storage) -> str:
    """Render report.html into the run folder, reading a few input/output images for the contact sheet; its uri."""
    sheet = contact_sheet(digest.candidates, inputs, outputs)
    html = render_report(summary, digest, totals, prices, threshold, sheet, evidence_items(digest.evidence, outputs))
    run_storage.put("report.html", html.encode("utf-8"), "text/html; charset=utf-8")
    return run_storage.uri_for("report.html")


def contact_sheet(manifest: pd.DataFrame, inputs: Storage, outputs: Storage,
                  limit: int = CONTACT_SHEET_IMAGES, crop: int = CROP_PX) -> list[dict]:
    """Input, bicubic and output crops of the same central region, as PNG data URIs; flagged images first."""
    ok = manifest[manifest["status"] == "ok"].assign(flag=lambda t: t["flagged"].fillna(False).astype(bool))
    chosen = ok.sort_values(["flag", "ap_excess", "key"], ascending=[False, False, True]).head(limit)
    items = []
    for row in chosen.itertuples():
        try:
            source, result = _open(inputs.get(row.key)), _open(outputs.get(row.output_key))
        except Exception:  # noqa: BLE001 - a missing or unreadable image leaves a gap, not a failed report
            continue
        side = min(crop, *source.size)
        x0, y0 = (source.width - side) // 2, (source.height - side) // 2
        sx, sy = result.width / source.width, result.height / source.height
        small = source.crop((x0, y0, x0 + side, y0 + side))
        box = (round(x0 * sx), round(y0 * sy), round((x0 + side) * sx), round((y0 + side) * sy))
        large = result.crop(box)
        items.append({"key": row.key, "input": _data_uri(_png(small)), "output": _data_uri(_png(large)),
                      "bicubic": _data_uri(_png(_bicubic_crop(source, result.size, box))),
                      "lr_psnr": "-" if pd.isna(row.lr_consistency_psnr) else f"{row.lr_consistency_psnr:.1f}",
                      "input_w": small.width, "input_h": small.height, "output_w": large.width, "output_h": large.height,
                      "sizes": f"{row.input_size} → {row.output_size}", "flagged": row.flag,
                      "ap_excess": "-" if pd.isna(row.ap_excess) else f"{row.ap_excess:.4f}"})
    return items


def _bicubic_crop(source, size: tuple[int, int], box: tuple[int, int, int, int], margin: int = 4):
    """The `box` of a bicubic upscale of `source` to `size`, resampling only the input around it (plus
    `margin` input px, so the crop's edges see the same neighbours as in a whole-image resize)."""
    from PIL import Image

    sx, sy = size[0] / source.width, size[1] / source.height
    x0, y0 = max(0, int(box[0] / sx) - margin), max(0, int(box[1] / sy) - margin)
    x1, y1 = min(source.width, -(-box[2] // sx) + margin), min(source.height, -(-box[3] // sy) + margin)
    x1, y1 = int(x1), int(y1)
    part = source.crop((x0, y0, x1, y1)).resize((round((x1 - x0) * sx), round((y1 - y0) * sy)), Image.BICUBIC)
    left, top = box[0] - round(x0 * sx), box[1] - round(y0 * sy)
    return part.crop((left, top, left + box[2] - box[0], top + box[3] - box[1]))


def _top(kept: pd.DataFrame, batch: pd.DataFrame, by: list[str], ascending: list[bool], n: int) -> pd.DataFrame:
    """The first `n` rows of `kept` and `batch` together in the order `by` (NaN last, as pandas sorts)."""
    both = _concat(kept, batch)
    return both.sort_values(by, ascending=ascending, kind="stable").head(n).reset_index(drop=True)


def _concat(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    if first.empty:
        return second.reset_index(drop=True)
    return pd.concat([first, second], ignore_index=True) if len(second) else first


def periodicity_histogram(edges: np.ndarray, counts: np.ndarray, threshold: float) -> bytes:
    """PNG: histogram of ap_excess (bin `edges`, `counts` per bin) with the flagging threshold marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 2.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.hist(edges[:-1], bins=edges, weights=counts, color="#4c72b0")
    ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("ap_excess")
    ax.set_ylabel("images")
    ax.legend()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _summary_rows(s: dict) -> list[tuple[str, str]]:
    return [("inputs listed", s["total"]), ("ok", s["ok"]), ("failed", s["failed"]),
            ("skipped (already done)", s["skipped"]), ("flagged (periodic artifacts)", s["flagged"]),
            ("mean NIQE of the outputs (lower: more natural)",
             "n/a" if s.get("mean_niqe") is None else f"{s['mean_niqe']:.3f}"),
            ("wall seconds", f"{s['seconds']:.1f}"), ("device seconds (forwards)", f"{s['gpu_seconds']:.2f}"),
            ("CPU seconds", f"{s['cpu_seconds']:.2f}"),
            ("MB in / out", f"{s['bytes_in'] / 1e6:.2f} / {s['bytes_out'] / 1e6:.2f}"),
            ("model actors: peak / mean (sampled each second)",
             f"{s.get('actors_peak', 0)} / {s.get('actors_mean', 0.0):.2f}"),
            ("actor restarts / nodes lost", f"{s.get('actor_restarts', 0)} / {s.get('lost_nodes', 0)}"),
            *_provenance_rows(s.get("c2pa") or {}), ("manifest", s["manifest_uri"])]


def _provenance_rows(c2pa: dict) -> list[tuple[str, str]]:
    """The outputs' C2PA manifests, and the note when none of them has one (docs/PROVENANCE.md)."""
    if not c2pa:
        return []
    rows = [("C2PA manifests: signed / sidecar / none", f"{c2pa.get('signed', 0)} / {c2pa.get('sidecar', 0)} / "
                                                        f"{c2pa.get('none', 0)}")]
    if c2pa.get("none") and not c2pa.get("signed") and not c2pa.get("sidecar"):
        rows.append(("provenance", "outputs carry the XMP label but no C2PA manifest (no signing identity)"))
    return rows


def _cost_rows(c: dict, prices: Prices) -> list[tuple[str, str]]:
    if not c:
        return [("cost", "not computed")]
    return [("total USD", f"{c['total_usd']:.6f}"),
            ("per ok image: mean / p50 / p95 USD",
             f"{c['per_image_mean_usd']:.6f} / {c['per_image_p50_usd']:.6f} / {c['per_image_p95_usd']:.6f}"),
            ("per delivered image, failures and skips included", f"{c['per_delivered_image_usd']:.6f}"),
            ("device utilisation (forward / actor time)", f"{c['utilisation']:.1%}"),
            ("device seconds: forward + warm-up + idle + lost",
             f"{c['device_forward_seconds']:.2f} + {c['device_warmup_seconds']:.2f} + {c['device_idle_seconds']:.2f}"
             f" + {c.get('device_lost_seconds', 0.0):.2f}"),
            ("prices", describe_prices(dataclasses.asdict(prices)))]


def _table(frame: pd.DataFrame, formats: dict) -> str:
    if frame.empty:
        return ""
    shown = frame.copy()
    for column, fmt in formats.items():
        shown[column] = shown[column].map(lambda v, f=fmt: "-" if pd.isna(v) else f.format(v))
    return shown.to_html(index=False, border=0, escape=True, na_rep="-")
