"""The evidence section of the run page and the comparison page: where a flagged output changed the picture.

For each image whose evidence is flagged (op4ksr/quality/evidence.py: contradicted cells, changed
text, a redrawn face): its heatmap (reports/<name>.contradiction.png, written by the actor) beside
the output's crop around its worst cell at 100%, the words that read differently, and the counts.
Manifests written before these fields existed have none of them: the section then says so.
"""
from __future__ import annotations

import json

import jinja2
import pandas as pd

from pipeline.ledger.pictures import data_uri as _data_uri, open_image as _open, png_bytes as _png
from pipeline.storage import Storage

EVIDENCE_IMAGES = 8  # flagged images shown with their pictures, per page or variant
EVIDENCE_COLUMNS = ["key", "output_key", "output_size", "evidence_flagged", "contradicted_fraction", "worst_cell",
                    "worst_cell_score", "added_detail", "faces", "face_contradiction", "text_cer", "text_words",
                    "changed_words", "evidence_notes", "heatmap_key"]
NEIGHBOURS = 1  # cells shown around the worst cell on each side

_FRAGMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""\
{% if not known %}<p class="note">{{ subject }} has no evidence fields (written before they existed).</p>
{% else %}<p>{{ flagged }} of {{ checked }} images flagged{% if title %} for {{ title }}{% endif %}: contradicted cells
(the output, downscaled, departs from the input by more than the cell threshold), text that reads differently,
or a face whose cells are contradicted (a proxy for a redrawn face, not identity).</p>
{% for item in items %}<div class="evidence"><figure class="heatmap"><img alt="contradiction heatmap of {{ item.key }}"
 src="{{ item.heatmap }}" width="{{ item.heatmap_w }}" height="{{ item.heatmap_h }}"><figcaption>heatmap: red cells
 contradict the input</figcaption></figure>{% if item.crop %}<figure class="worst"><img alt="output crop at the worst cell of
 {{ item.key }}" src="{{ item.crop }}" width="{{ item.crop_w }}" height="{{ item.crop_h }}"><figcaption>output at
 {{ item.worst_cell }}, 100%</figcaption></figure>{% endif %}<div class="facts"><b>{{ item.key }}</b><br>
contradicted {{ item.fraction }} of cells · worst {{ item.worst_score }} · added detail {{ item.added }}
{% if item.faces %}<br>faces {{ item.faces }} · worst face {{ item.face }}{% endif %}
{% if item.text_cer != "-" %}<br>text_cer {{ item.text_cer }} over {{ item.text_words }} words{% endif %}
{% if item.words %}<br>changed words:<ul class="words">{% for w in item.words %}<li>{{ w.input }} → {{ w.output or "(nothing)" }}
 at {{ w.left }},{{ w.top }}</li>{% endfor %}</ul>{% endif %}</div></div>
{% endfor %}{% endif %}""")


def has_evidence(rows: pd.DataFrame) -> bool:
    """Whether a manifest (or per-image table) carries the evidence fields at all (older runs do not)."""
    return "evidence_flagged" in rows and rows["evidence_flagged"].notna().any()


def flagged_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose evidence is flagged, the most contradicted first."""
    if not has_evidence(rows):
        return rows.iloc[0:0]
    rows = rows.reindex(columns=list(dict.fromkeys([*rows.columns, *EVIDENCE_COLUMNS])))  # a report may lack some
    flagged = rows[rows["evidence_flagged"].fillna(False).astype(bool)]
    return flagged.sort_values(["contradicted_fraction", "text_cer", "key"], ascending=[False, False, True],
                               na_position="last", kind="stable")


def _number(value, fmt: str) -> str:
    return "-" if value is None or pd.isna(value) else format(value, fmt)


def _crop_around(output, worst_cell: str):
    """The output's crop around the worst cell ("WxH+left+top") with NEIGHBOURS cells on each side, clipped."""
    size, left, top = worst_cell.split("+")
    width, height = map(int, size.split("x"))
    left, top = int(left), int(top)
    box = (max(0, left - NEIGHBOURS * width), max(0, top - NEIGHBOURS * height),
           min(output.width, left + (NEIGHBOURS + 1) * width), min(output.height, top + (NEIGHBOURS + 1) * height))
    return output.crop(box)


def evidence_items(rows: pd.DataFrame, outputs: Storage, limit: int = EVIDENCE_IMAGES) -> list[dict]:
    """The first `limit` flagged rows as page items: heatmap and worst-cell crop (data URIs), facts, words."""
    items = []
    for row in flagged_rows(rows).head(limit).to_dict("records"):
        try:
            heatmap = _open(outputs.get(row["heatmap_key"])) if isinstance(row.get("heatmap_key"), str) else None
            output = _open(outputs.get(row["output_key"]))
        except Exception:  # noqa: BLE001 - an image gone since its run leaves a gap, not a failed page
            continue
        if heatmap is None:  # flagged for text alone on an image too small for a map: the output, shrunk
            heatmap = output.copy()
            heatmap.thumbnail((512, 512))
        crop = _crop_around(output, row["worst_cell"]) if isinstance(row.get("worst_cell"), str) else None
        words = json.loads(row["changed_words"]) if isinstance(row.get("changed_words"), str) else []
        items.append({"key": row["key"], "heatmap": _data_uri(_png(heatmap)), "heatmap_w": heatmap.width,
                      "heatmap_h": heatmap.height, "crop": _data_uri(_png(crop)) if crop else "",
                      "crop_w": crop.width if crop else 0, "crop_h": crop.height if crop else 0,
                      "worst_cell": row.get("worst_cell") or "-", "fraction": _number(row["contradicted_fraction"], ".2%"),
                      "worst_score": _number(row.get("worst_cell_score"), ".2f"),
                      "added": _number(row.get("added_detail"), ".2f"), "faces": int(row.get("faces") or 0),
                      "face": _number(row.get("face_contradiction"), ".2f"), "text_cer": _number(row.get("text_cer"), ".4f"),
                      "text_words": int(row.get("text_words") or 0), "words": words})
    return items


def render_evidence(items: list[dict], *, flagged: int, checked: int, known: bool, title: str = "",
                    subject: str = "This run") -> str:
    """The section's HTML (no heading): the counts, then each item's heatmap, crop, facts and changed words."""
    return _FRAGMENT.render(items=items, flagged=flagged, checked=checked, known=known, title=title, subject=subject)


EVIDENCE_CSS = """\
.evidence { display: flex; flex-wrap: wrap; gap: .8em; align-items: flex-start; margin: .6em 0 1.2em; }
.evidence figure { margin: 0; border: 1px solid #ddd; padding: .4em; background: #fafafa; }
.evidence img { display: block; max-width: 100%; height: auto; } .evidence figure.worst img { image-rendering: pixelated; }
.evidence figcaption, .evidence .facts { font-size: 12px; } .evidence .facts { max-width: 320px; }
.words { margin: .2em 0; padding-left: 1.2em; }
"""
