"""compare/comparison.html: the variants side by side, self-contained like a run's report.html.

The per-variant table (quality metrics, flagged, failures, seconds and USD per image), then the
same central region of each sample image at 100%: the input, a bicubic upscale and every
variant's output; then the per-image rows. CSS inline, pictures as data: URIs, no script.
"""
from __future__ import annotations

import datetime as dt

import jinja2
import pandas as pd

from pipeline.ledger.comparison import quality_fields
from pipeline.ledger.evidence_page import EVIDENCE_CSS, evidence_items, flagged_rows, has_evidence, render_evidence
from pipeline.ledger.page import CROP_PX, _bicubic_crop, _data_uri, _open, _png, _table
from pipeline.storage import Storage

COMPARE, VARIANTS = "compare/", "variants/"  # under the comparison's output prefix

_TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>op4ksr comparison</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: 13px; } td, th { padding: .2em .7em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f4f4f4; } td { font-variant-numeric: tabular-nums; }
.note { color: #666; }
.row { display: flex; flex-wrap: wrap; gap: .6em; align-items: flex-start; margin: .4em 0 1.4em; }
.row figure { margin: 0; border: 1px solid #ddd; padding: .4em; background: #fafafa; }
.row img { image-rendering: pixelated; display: block; }
.row figcaption { font-size: 12px; max-width: 200px; overflow-wrap: anywhere; }
.flagged { color: #b00; font-weight: bold; }
{{ evidence_css | safe }}</style></head>
<body>
<h1>op4ksr comparison: {{ variants | join(" · ") }}</h1>
<p class="note">Generated {{ generated }}. {{ sample_size }} inputs of {{ input_uri }}, a sample stratified by
format and file size; each variant ran over the same sample with the batch pipeline, under
{{ output_uri }}variants/&lt;name&gt;/.</p>

<h2>Variants</h2>
<p class="note">Means over each variant's ok images. LR-consistency: PSNR of the output downscaled against the
input (dB, higher keeps the input's picture); colour_shift: the largest channel-mean difference from the
input; NIQE: naturalness without a reference (lower is more natural); ap_excess: periodicity at the token
period above the input's (flagged above {{ threshold }}); any other metric column comes from the per-image
reports as they are. Seconds: the model's
share of the forward per image, and CPU seconds of the fetch, decode, encode and upload; USD from each
run's cost ledger (forward, warm-up and idle device time, CPU, requests).</p>
{{ variant_html | safe }}

<h2>The same region, side by side</h2>
<p class="note">Each at 100% (one image pixel per screen pixel): the input's central {{ crop }} px, a bicubic
upscale of it, then each variant's output of that region.</p>
{% for item in crops %}<h3>{{ item.key }} <span class="note">{{ item.sizes }}</span></h3>
<div class="row">{% for panel in item.panels %}<figure><img alt="{{ panel.name }} crop" src="{{ panel.src }}"
 width="{{ panel.w }}" height="{{ panel.h }}"><figcaption><b>{{ panel.name }}</b>{% if panel.text %}<br>{{ panel.text }}{% endif %}
{% if panel.flagged %}<br><span class="flagged">flagged</span>{% endif %}</figcaption></figure>{% endfor %}</div>
{% else %}<p class="note">No image that every variant upscaled.</p>{% endfor %}

<h2>Evidence: is it the same picture?</h2>
<p class="note">contradicted_fraction: the share of cells where the output, downscaled, contradicts the input;
added_detail: the output's energy above the input's resolution over bicubic's (1: none added; a matter of
policy, not a defect); text_cer: the share of the input's confidently read characters that read differently
in the output (docs/QUALITY.md).</p>
{% for section in evidence %}<h3>{{ section.name }}</h3>{{ section.html | safe }}{% endfor %}

<h2>Per image</h2>
{{ images_html | safe }}
</body></html>
""")

_FORMATS = {"lr_consistency_psnr": "{:.2f}", "ap_excess": "{:.4f}", "niqe": "{:.2f}", "colour_shift": "{:.4f}",
            "contradicted_fraction": "{:.4f}", "added_detail": "{:.2f}", "text_cer": "{:.4f}",
            "model_s_per_image": "{:.3f}",
            "cpu_s_per_image": "{:.3f}", "usd_per_image": "{:.6f}", "gpu_seconds": "{:.3f}",
            "cpu_seconds": "{:.3f}", "total_usd": "{:.6f}"}


def render_comparison(variants: pd.DataFrame, images: pd.DataFrame, crops: list[dict], *, input_uri: str,
                      output_uri: str, sample_size: int, threshold: float, evidence: list[dict] = ()) -> str:
    """The page's HTML for the per-variant table, the per-image rows and crop_rows' items."""
    metrics = quality_fields(images)
    formats = _FORMATS | {m: _FORMATS.get(m, "{:.4g}") for m in metrics}
    shown = images[["key", "variant", "status", *metrics, "flagged", "evidence_flagged", "gpu_seconds", "total_usd",
                    "error"]]
    shown = shown.assign(error=shown["error"].fillna(""))
    return _TEMPLATE.render(
        variants=list(variants["variant"]), generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        sample_size=sample_size, input_uri=input_uri, output_uri=output_uri.rstrip("/") + "/", threshold=threshold,
        variant_html=_table(variants, {k: v for k, v in formats.items() if k in variants}),
        crops=crops, crop=CROP_PX, evidence_css=EVIDENCE_CSS, evidence=list(evidence),
        images_html=_table(shown.sort_values(["key", "variant"], kind="stable"),
                           {k: v for k, v in formats.items() if k in shown}))


def crop_rows(images: pd.DataFrame, order: list[str], inputs: Storage, outputs: dict[str, Storage],
              limit: int, crop: int = CROP_PX) -> list[dict]:
    """For the first `limit` sample keys every variant upscaled: the input, bicubic and each variant's crop
    of the input's central `crop` px, as data URIs with each variant's metrics."""
    metrics = [m for m in ("lr_consistency_psnr", "niqe", "ap_excess") if m in images]
    ok = images[images["status"] == "ok"]
    complete = ok.groupby("key")["variant"].nunique()
    keys = sorted(complete[complete == len(order)].index)[:limit]
    items = []
    for key in keys:
        rows = ok[ok["key"] == key].set_index("variant")
        try:
            source = _open(inputs.get(key))
            results = {name: _open(outputs[name].get(rows.loc[name, "output_key"])) for name in order}
        except Exception:  # noqa: BLE001 - an image gone since its run leaves a gap, not a failed page
            continue
        side = min(crop, *source.size)
        x0, y0 = (source.width - side) // 2, (source.height - side) // 2
        small = source.crop((x0, y0, x0 + side, y0 + side))
        panels = [{"name": "input", "src": _data_uri(_png(small)), "w": side, "h": side, "text": "", "flagged": False}]
        first = results[order[0]]
        sx, sy = first.width / source.width, first.height / source.height
        box = (round(x0 * sx), round(y0 * sy), round((x0 + side) * sx), round((y0 + side) * sy))
        bicubic = _bicubic_crop(source, first.size, box)
        panels.append({"name": "bicubic", "src": _data_uri(_png(bicubic)), "w": bicubic.width, "h": bicubic.height,
                       "text": "", "flagged": False})
        for name in order:
            result = results[name].resize(first.size) if results[name].size != first.size else results[name]
            large = result.crop(box)
            text = " · ".join(f"{m} {_short(rows.loc[name, m])}" for m in metrics)
            panels.append({"name": name, "src": _data_uri(_png(large)), "w": large.width, "h": large.height,
                           "text": text, "flagged": bool(rows.loc[name, "flagged"])})
        items.append({"key": key, "sizes": f"{rows.iloc[0]['input_size']} → {rows.iloc[0]['output_size']}",
                      "panels": panels})
    return items


def evidence_sections(images: pd.DataFrame, runs: list) -> list[dict]:
    """Per variant: {"name", "html"}: its flagged images' heatmaps, crops, changed words and counts."""
    sections = []
    for run in runs:
        ok = images[(images["variant"] == run.name) & (images["status"] == "ok")]
        known = has_evidence(ok)
        html = render_evidence(evidence_items(ok, run.outputs), flagged=len(flagged_rows(ok)),
                               checked=int(ok["evidence_flagged"].notna().sum()) if known else 0, known=known,
                               subject="This variant's run")
        sections.append({"name": run.name, "html": html})
    return sections


def _short(value) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.3g}"


def write_comparison(root: Storage, runs: list, keys: list[str], inputs: Storage, *, crops: int,
                     threshold: float) -> tuple[str, str]:
    """compare/comparison.parquet (per image and variant) and compare/comparison.html under `root`;
    their uris. `runs`: pipeline.ledger.comparison.VariantRun per variant, in the page's order."""
    import io

    from pipeline.ledger.comparison import image_rows, variant_table

    order = [run.name for run in runs]
    images = pd.concat([image_rows(run, keys) for run in runs], ignore_index=True)
    variants = variant_table(images, order)
    items = crop_rows(images, order, inputs, {run.name: run.outputs for run in runs}, crops)
    html = render_comparison(variants, images, items, input_uri=inputs.spec.uri, output_uri=root.spec.uri,
                             sample_size=len(keys), threshold=threshold, evidence=evidence_sections(images, runs))
    table = io.BytesIO()
    images.astype({c: "string" for c in ("error", "status", "run_id", "model_id") if c in images}).to_parquet(
        table, index=False)
    root.put(f"{COMPARE}comparison.parquet", table.getvalue(), "application/vnd.apache.parquet")
    root.put(f"{COMPARE}comparison.html", html.encode("utf-8"), "text/html; charset=utf-8")
    return root.uri_for(f"{COMPARE}comparison.html"), root.uri_for(f"{COMPARE}comparison.parquet")
