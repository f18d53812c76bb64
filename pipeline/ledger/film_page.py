"""runs/<id>/report.html of a --ray video run: per sequence or video, its shots' curves and temporal profile.

Built by pipeline/run/film_report.py from the per-shot reports it writes (runs/<id>/shots/). Per
sequence: the luma-flicker and warping-error curves, one colour per shot, beside bicubic's
(op4ksr.video.charts.plot_shots), cuts dashed and frames filled from bicubic in red; the temporal
profile (each output frame's middle row, top to bottom); and a table of the shots. The run's
counts and its cost per frame and per minute of footage head the page. Everything is inline (CSS
in a <style>, pictures as data: URIs, no script), as on the image run's page (pipeline/ledger/page.py).
"""
from __future__ import annotations

import io

import jinja2

from op4ksr.video.charts import plot_shots
from pipeline.ledger.pictures import data_uri

_TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>op4ksr video run {{ run_id }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .2em .7em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f4f4f4; } td { font-variant-numeric: tabular-nums; }
.kv th { width: 18em; } .note { color: #666; } img.chart { max-width: 100%; }
div.profile { max-height: 640px; overflow-y: auto; max-width: 1030px; }
img.profile { width: 100%; image-rendering: pixelated; background: #000; display: block; }
.failed { color: #b00; font-weight: bold; }
</style></head>
<body>
<h1>op4ksr video run {{ run_id }}</h1>
<p class="note">From the chunks' reports under runs/{{ run_id }}/chunks/ (and, for chunks whose frames were done
before, the newest earlier run's); the figures per shot are in runs/{{ run_id }}/shots/.</p>

<h2>Summary</h2>
<table class="kv">{% for name, value in summary_rows %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}</table>

{% for s in sequences %}
<h2>{{ s.name }}</h2>
<p>{{ s.frames }} frames in {{ s.shots | length }} shots; cuts before {{ s.cuts or "none" }};
<span class="{{ 'failed' if s.failed else '' }}">{{ s.failed }} filled from bicubic</span>;
{{ s.flagged }} flagged for added flicker; {{ s.unreported }} not reported by any run.</p>
{% if s.chart %}<img class="chart" alt="per-shot curves of {{ s.name }}"
 src="{{ s.chart }}">{% endif %}
<h3>Temporal profile</h3>
<p class="note">Each output frame's middle row, first frame at the top: steady footage draws smooth
streaks, flicker horizontal bands. Left margin: yellow where a shot starts, red where a frame was filled from
bicubic; black rows: frames no run reported. At most 256 px wide here; the full width is in
runs/{{ run_id }}/shots/.</p>
{% if s.profile %}<div class="profile"><img class="profile" alt="temporal profile of {{ s.name }}"
 src="{{ s.profile }}"></div>
{% else %}<p class="note">No frame reported.</p>{% endif %}
<table><tr><th>shot</th><th>frames</th><th>first–last</th><th>max |flicker − bicubic's|</th>
<th>warping error vs bicubic</th><th>flagged</th><th>filled from bicubic</th></tr>
{% for shot in s.shots %}<tr><td>{{ shot.shot }}</td><td>{{ shot.frames }}</td>
<td>{{ shot.start }}–{{ shot.end - 1 }}</td>
<td>{{ shot.added }}</td><td>{{ shot.ratio }}</td>
<td>{{ shot.flicker_flagged | join(", ") or "-" }}</td>
<td class="{{ 'failed' if shot.failed_frames else '' }}">{% for f in shot.failed_frames %}{{ f.frame }}
({{ f.error }}) {% else %}-{% endfor %}</td></tr>{% endfor %}</table>
{% else %}<p class="note">No sequence or video was planned.</p>{% endfor %}
</body></html>
""")


def shots_chart(report: dict) -> bytes | None:
    """The per-shot curves as a PNG (None for a report without frames); gaps (null) drawn as breaks."""
    if not report["shots"]:
        return None
    nan = float("nan")
    plotted = {**report, "shots": [{**shot, **{name: [nan if v is None else v for v in shot[name]] for name in
                                                ("flicker_curve", "bicubic_flicker_curve", "warping_error",
                                                 "bicubic_warping_error")}} for shot in report["shots"]]}
    out = io.BytesIO()
    plot_shots(plotted, out)
    return out.getvalue()


def _added_flicker(shot: dict) -> str:
    added = [abs(o - b) for o, b in zip(shot["flicker_curve"], shot["bicubic_flicker_curve"])
             if o is not None and b is not None]
    return f"{max(added):.4f}" if added else "-"


def _ratio(shot: dict) -> str:
    ratio = shot["warping_error_vs_bicubic"]
    return "not measured" if ratio is None else f"{ratio:.3f}"


def _sequence(report: dict, chart: bytes | None, profile: bytes | None) -> dict:
    return {"name": report["sequence"], "frames": report["frames"], "cuts": ", ".join(map(str, report["cuts"])),
            "failed": report["frames_failed"], "flagged": report["frames_flagged"],
            "unreported": report["frames_unreported"], "chart": chart and data_uri(chart),
            "profile": profile and data_uri(profile),
            "shots": [{**s, "added": _added_flicker(s), "ratio": _ratio(s)} for s in report["shots"]]}


def _money(value) -> str:
    return "n/a" if value is None else f"{value:.6f}"


def _summary_rows(s: dict) -> list[tuple[str, str]]:
    cost = s.get("cost") or {}
    return [("frames listed", s["frames"]), ("already done before this run", s["already_done"]),
            ("chunks run", s["chunks"]), ("frames done", s["done"]),
            ("frames failed (filled from bicubic)", s["failed"]), ("refused", len(s["refused"])),
            ("wall seconds", f"{s['seconds']:.1f}"),
            ("model seconds (lead-in shares included)", f"{cost.get('model_seconds', 0.0):.3f}"),
            ("USD per frame", _money(cost.get("usd_per_frame"))),
            (f"USD per minute of footage (at {cost.get('fps', '?')} fps)", _money(cost.get("usd_per_footage_minute"))),
            ("USD in all", _money(cost.get("usd")))]


def render_film_page(summary: dict, sequences: list[tuple[dict, bytes | None, bytes | None]]) -> str:
    """The page's HTML; `sequences`: (per-shot report, curves PNG, temporal profile PNG) of each."""
    return _TEMPLATE.render(run_id=summary["run_id"], summary_rows=_summary_rows(summary),
                            sequences=[_sequence(*s) for s in sequences])
