"""HTML and SVG of `vmm report`: plain functions from rows (dicts) to markup. No Beam, no I/O.

Every value that comes from the index (ids, titles, URIs, OCR text, transcripts, error messages,
metadata) goes through `esc`; the only other strings in the markup are this module's own literals
and numbers it formats. Links and image paths are made by `pipelines.report` from names it builds
itself (letters, digits, `_`, `-`), and are escaped too. Pages are self-contained: inline CSS, the
index's sort/filter script inline, charts as inline SVG, pictures as files beside the page; nothing
is fetched from the network.
"""

from __future__ import annotations

import html
import math
from typing import Iterable, Sequence

# OCR text domains (models.ocr_domains) and why a frame was kept (frames.reason).
DOMAIN_COLORS = {"subtitle": "#1565c0", "overlay": "#e65100", "scene": "#2e7d32", "noise": "#757575"}
REASON_COLORS = {"first": "#6a1b9a", "scene": "#c62828", "clock": "#00838f", "text": "#f9a825"}
ASR_COLOR = "#43a047"

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em 2em;color:#222;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}table.sortable th.asc::after{content:" \\25B2"}
table.sortable th.desc::after{content:" \\25BC"}
.banner{background:#c62828;color:#fff;padding:.6em 1em;font-weight:bold;margin:.5em 0}
.warn{background:#fff3e0;border-left:4px solid #e65100;padding:.4em .8em}
.strip{display:flex;flex-wrap:wrap;gap:6px}.strip figure{margin:0;font-size:12px;width:180px}
.strip img{width:180px;display:block;background:#eee}
.ocr{display:flex;flex-wrap:wrap;gap:8px}.ocr figure{margin:0;font-size:12px;width:420px}
.ocr svg{width:420px;height:auto;display:block;background:#333}
.ocr polygon{fill:none;stroke-width:3;vector-effect:non-scaling-stroke}
.ocr polygon:hover{fill:rgba(255,255,255,.35)}
.legend span{display:inline-block;margin-right:1em}.swatch{display:inline-block;width:.9em;height:.9em;
vertical-align:middle;margin-right:.3em}
ul.lines{margin:.2em 0;padding-left:1.3em}.muted{color:#777}code{font-size:12px;word-break:break-all}
.charts{display:flex;flex-wrap:wrap;gap:2em}svg.chart{max-width:100%;height:auto}
""" + "".join(f".line-{d},.domain-{d}{{color:{c}}}polygon.box-{d}{{stroke:{c}}}" for d, c in DOMAIN_COLORS.items())

_SORT_FILTER_JS = """
(function(){
  var table=document.getElementById('videos');if(!table)return;
  var body=table.tBodies[0],heads=table.tHead.rows[0].cells;
  function key(row,i){var c=row.cells[i],v=c.getAttribute('data-v');
    if(v===null)return c.textContent.toLowerCase();if(v==='')return null;return parseFloat(v);}
  Array.prototype.forEach.call(heads,function(th,i){th.addEventListener('click',function(){
    var asc=!th.classList.contains('asc');
    Array.prototype.forEach.call(heads,function(h){h.classList.remove('asc','desc');});
    th.classList.add(asc?'asc':'desc');
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a,i),y=key(b,i);
      if(x===null&&y===null)return 0;if(x===null)return 1;if(y===null)return -1;
      if(x<y)return asc?-1:1;if(x>y)return asc?1:-1;return 0;});
    rows.forEach(function(r){body.appendChild(r);});});});
  var box=document.getElementById('filter'),count=document.getElementById('shown');
  function apply(){var q=box.value.trim().toLowerCase(),n=0;
    Array.prototype.forEach.call(body.rows,function(r){
      var hit=!q||r.textContent.toLowerCase().indexOf(q)>=0;r.hidden=!hit;if(hit)n++;});
    count.textContent=n;}
  box.addEventListener('input',apply);apply();
})();
"""


def esc(value) -> str:
    """A value from the index as HTML text or attribute content (None: empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def fmt(value, digits: int = 3) -> str:
    """A number for display: '' for None/NaN, ints as they are, floats rounded."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def document(title: str, body: str, script: str = "") -> str:
    script_tag = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n{script_tag}</body></html>\n")


def _svg(width: int, height: int, inner: str, label: str, cls: str = "chart") -> str:
    return (f'<svg class="{cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}">{inner}</svg>')


def bar_chart_svg(items: Sequence[tuple[str, float]], unit: str, label: str, width: int = 420) -> str:
    """Horizontal bars, one per (name, value); values <= 0 or None get no bar."""
    row, left, right = 22, 90, 70
    items = [(name, value) for name, value in items]
    top = max((v for _, v in items if v), default=0.0) or 1.0
    parts = []
    for i, (name, value) in enumerate(items):
        y = i * row + 4
        w = (width - left - right) * (value or 0) / top
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="12">{esc(name)}</text>'
                     f'<rect x="{left}" y="{y}" width="{w:.1f}" height="16" fill="#1565c0">'
                     f"<title>{esc(name)}: {fmt(value, 1)} {esc(unit)}</title></rect>"
                     f'<text x="{left + w + 4:.1f}" y="{y + 13}" font-size="12">'
                     f"{fmt(value, 1) if value is not None else 'n/a'} {esc(unit)}</text>")
    return _svg(width, max(1, len(items)) * row + 8, "".join(parts), label)


def histogram_svg(values: Iterable[float | None], lo: float, hi: float, bins: int, label: str,
                  width: int = 420, height: int = 170) -> str:
    """Counts of the non-null values in `bins` equal bins over [lo, hi] (values outside are clamped)."""
    counts = [0] * bins
    nulls = 0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            nulls += 1
            continue
        b = int((min(max(v, lo), hi) - lo) / (hi - lo) * bins)
        counts[min(b, bins - 1)] += 1
    left, bottom, top_pad = 30, 30, 18
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    peak = max(counts) or 1
    bw = plot_w / bins
    parts = [f'<text x="{left}" y="12" font-size="12">{esc(label)} (n={sum(counts)}'
             f'{f", {nulls} null" if nulls else ""})</text>',
             f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top_pad + 10}" text-anchor="end" font-size="11">{peak}</text>']
    for i, c in enumerate(counts):
        h = plot_h * c / peak
        x0 = lo + (hi - lo) * i / bins
        x1 = lo + (hi - lo) * (i + 1) / bins
        parts.append(f'<rect class="bin" x="{left + i * bw + 1:.1f}" y="{top_pad + plot_h - h:.1f}" '
                     f'width="{bw - 2:.1f}" height="{h:.1f}" fill="#1565c0" data-count="{c}">'
                     f"<title>[{x0:.2f}, {x1:.2f}): {c}</title></rect>")
    for i in range(0, bins + 1, max(1, bins // 4)):
        x = left + i * bw
        parts.append(f'<text x="{x:.1f}" y="{height - 12}" text-anchor="middle" font-size="11">'
                     f"{lo + (hi - lo) * i / bins:.1f}</text>")
    return _svg(width, height, "".join(parts), label)


def timeline_svg(duration_s: float | None, frames: Sequence[dict], segments: Sequence[dict],
                 width: int = 900) -> str:
    """The video's length with a tick per frame (coloured by reason) and a bar per ASR segment."""
    ends = [f["timestamp_s"] for f in frames] + [s["end_s"] for s in segments]
    span = max([duration_s or 0.0] + ends) or 1.0
    left, right = 60, 10
    scale = (width - left - right) / span

    def x(t: float) -> float:
        return left + t * scale

    parts = [f'<text x="0" y="20" font-size="12">frames</text><text x="0" y="50" font-size="12">speech</text>',
             f'<rect x="{left}" y="8" width="{width - left - right}" height="18" fill="#f4f4f4"/>',
             f'<rect x="{left}" y="38" width="{width - left - right}" height="18" fill="#f4f4f4"/>']
    for f in frames:
        color = REASON_COLORS.get(f["reason"], "#000")
        tall = f["reason"] != "text"
        parts.append(f'<line class="tick reason-{esc(f["reason"])}" x1="{x(f["timestamp_s"]):.1f}" '
                     f'y1="{6 if tall else 14}" x2="{x(f["timestamp_s"]):.1f}" y2="28" stroke="{color}" '
                     f'stroke-width="{2 if tall else 1}"><title>{fmt(f["timestamp_s"], 2)} s: {esc(f["reason"])}'
                     f"</title></line>")
    for s in segments:
        parts.append(f'<rect class="segment" x="{x(s["start_s"]):.1f}" y="40" '
                     f'width="{max(1.0, (s["end_s"] - s["start_s"]) * scale):.1f}" height="14" fill="{ASR_COLOR}" stroke="#fff">'
                     f'<title>{fmt(s["start_s"], 2)}-{fmt(s["end_s"], 2)} s: {esc(s["text"])}</title></rect>')
    step = _tick_step(span)
    t = 0.0
    while t <= span + 1e-9:
        parts.append(f'<text x="{x(t):.1f}" y="72" text-anchor="middle" font-size="11">{t:g}s</text>')
        t += step
    return _svg(width, 80, "".join(parts), "timeline")


def _tick_step(span: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span / step <= 12:
            return float(step)
    return 7200.0


def legend(colors: dict[str, str], prefix: str) -> str:
    return '<p class="legend">' + "".join(
        f'<span class="{prefix}-{esc(name)}"><i class="swatch" style="background:{c}"></i>{esc(name)}</span>'
        for name, c in colors.items()) + "</p>"


def ocr_frame_svg(image_href: str | None, width: int, height: int, lines: Sequence[dict]) -> str:
    """A frame with its OCR boxes: the 4 corners (pixels of the original frame) in a viewBox of the
    frame's size, so they scale with the picture; the text on hover (<title>)."""
    width, height = max(1, int(width or 1)), max(1, int(height or 1))
    inner = (f'<image href="{esc(image_href)}" x="0" y="0" width="{width}" height="{height}" '
             f'preserveAspectRatio="none"/>' if image_href else
             f'<rect width="{width}" height="{height}" fill="#555"/>')
    for line in lines:
        box = line.get("box") or []
        if len(box) != 8:
            continue
        points = " ".join(f"{box[i]:.1f},{box[i + 1]:.1f}" for i in range(0, 8, 2))
        domain = line.get("domain") or "noise"
        inner += (f'<polygon class="box box-{esc(domain)}" data-domain="{esc(domain)}" points="{points}">'
                  f"<title>{esc(line.get('text'))} ({esc(domain)}, score {fmt(line.get('score'), 2)})</title>"
                  f"</polygon>")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'preserveAspectRatio="xMidYMid meet">{inner}</svg>')


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", table_id: str = "") -> str:
    """A table whose cells are markup already (escape values with esc/fmt first)."""
    attrs = (f' class="{cls}"' if cls else "") + (f' id="{table_id}"' if table_id else "")
    head = "<thead><tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr></thead>" if any(headers) else ""
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table{attrs}>{head}<tbody>{body}</tbody></table>"


def num_cell(value, digits: int = 3) -> str:
    """A numeric cell that sorts by value (data-v; empty for null: sorted last)."""
    v = "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))
    return f'<td class="num" data-v="{v}">{fmt(value, digits)}</td>'


def random_weights_banner(metadata: dict) -> str:
    if metadata.get("vmm.clip_weights") != "none":
        return ""
    return ('<div class="banner" id="random-weights">CLIP weights: none (random initialisation). Embeddings, '
            "visual tokens, topic coherence and title-visual similarity of this index carry no meaning.</div>")


def index_page(*, root: str, summary: dict | None, metadata: dict, videos: Sequence[dict],
               errors: Sequence[dict], stats: dict, generated: str) -> str:
    """The report's first page. `videos`: rows with `page` (link) and the table's values."""
    s = summary or {}
    counts = s.get("counts") or {}
    entries = counts.get("entries")
    rows = [("index", f"<code>{esc(root)}</code>"),
            ("entries", fmt(entries if entries is not None else len(videos) + len(errors))),
            ("videos", fmt(len(videos))), ("errors", fmt(len(errors))),
            ("frames", fmt(stats["frames"])), ("ASR segments", fmt(stats["segments"])),
            ("wall time (last run)", f"{fmt(s.get('wall_time_s'), 1)} s" if s.get("wall_time_s") is not None else ""),
            ("runs", fmt(stats["runs"])), ("report generated", esc(generated))]
    errors_by_type = table(["error type", "entries"], ([esc(k), num_cell(v, 0)] for k, v in
                                                       sorted(stats["errors_by_type"].items())))
    stage_errors = table(["stage", "stage errors"], ([esc(k), num_cell(v, 0)] for k, v in
                                                     sorted(stats["stage_errors_by_stage"].items())))
    busy = [(k, v) for k, v in (s.get("stage_seconds") or {}).items()]
    models = table(["key", "value"], ([esc(k), f"<code>{esc(v)}</code>"] for k, v in sorted(metadata.items())))
    heads = ["title", "video id", "duration s", "resolution", "keyframes", "text frames", "topic coherence",
             "title-visual similarity", "subtitles", "speech s", "stage errors"]
    body_rows = []
    for v in videos:
        pixels = (v.get("width") or 0) * (v.get("height") or 0)
        body_rows.append([
            f'<td><a href="{esc(v["page"])}">{esc(v.get("title") or "(no title)")}</a></td>',
            f"<code>{esc(v['video_id'])}</code>",
            num_cell(v.get("duration_s"), 1),
            f'<td data-v="{pixels}">{esc(v.get("width"))}x{esc(v.get("height"))}</td>',
            num_cell(v.get("num_keyframes"), 0), num_cell(v.get("text_frames"), 0),
            num_cell(v.get("topic_coherence")), num_cell(v.get("title_visual_similarity")),
            f'<td data-v="{1 if v.get("ocr_subtitle_text") else 0}">{"yes" if v.get("ocr_subtitle_text") else "no"}</td>',
            num_cell(v.get("speech_seconds"), 1), num_cell(len(v.get("stage_errors") or []), 0),
        ])
    error_rows = ([f"<code>{esc(e.get('video_id'))}</code>", f"<code>{esc(e.get('uri'))}</code>", esc(e.get("stage")),
                   esc(e.get("error_type")), esc(e.get("message"))] for e in errors)
    body = (f"<h1>vmm report</h1>{random_weights_banner(metadata)}"
            f"<h2>Run summary</h2>{table(['', ''], rows, cls='summary')}"
            f'<div class="charts"><div><h2>Errors by type</h2>{errors_by_type}'
            f"<h2>Stage errors by stage</h2>{stage_errors}</div>"
            f"<div><h2>Stage busy seconds (last run, summed over workers)</h2>"
            f"{bar_chart_svg(busy, 's', 'stage busy seconds') if busy else '<p class=muted>no run summary</p>'}"
            f"</div></div>"
            f"<h2>Models and weights</h2>{models}"
            f'<h2>Videos (<span id="shown">{len(videos)}</span> of {len(videos)})</h2>'
            f'<p><input id="filter" type="search" placeholder="filter: any text in a row" size="40"> '
            f'<span class="muted">click a column header to sort</span></p>'
            f"{table(heads, body_rows, cls='sortable', table_id='videos')}"
            f'<div class="charts"><div><h2>Topic coherence</h2>'
            f"{histogram_svg([v.get('topic_coherence') for v in videos], -1.0, 1.0, 20, 'topic coherence')}</div>"
            f"<div><h2>Title-visual similarity</h2>"
            f"{histogram_svg([v.get('title_visual_similarity') for v in videos], -1.0, 1.0, 20, 'title-visual similarity')}"
            f"</div></div>"
            f"<h2>Errors ({len(errors)})</h2>"
            f"{table(['video id', 'uri', 'stage', 'error type', 'message'], error_rows, table_id='errors')}")
    return document("vmm report", body, _SORT_FILTER_JS)


def video_page(*, video: dict, frames: Sequence[dict], segments: Sequence[dict], thumbs: dict[int, str],
               no_pictures: str | None, metadata: dict, index_href: str) -> str:
    """One video's page. `thumbs`: frame_index -> picture path (relative to the page);
    `no_pictures`: why there are none (None when there are)."""
    title = video.get("title") or "(no title)"
    w, h = video.get("width") or 1, video.get("height") or 1
    scores = [("video id", f"<code>{esc(video['video_id'])}</code>"), ("uri", f"<code>{esc(video.get('uri'))}</code>"),
              ("duration", f"{fmt(video.get('duration_s'), 2)} s"), ("fps", fmt(video.get("fps"), 2)),
              ("resolution", f"{esc(video.get('width'))}x{esc(video.get('height'))}"),
              ("codec", esc(video.get("video_codec"))), ("has audio", fmt(video.get("has_audio"))),
              ("keyframes", fmt(video.get("num_keyframes"))),
              ("text frames", fmt(sum(1 for f in frames if f["reason"] == "text"))),
              ("topic coherence", fmt(video.get("topic_coherence"))),
              ("title-visual similarity", fmt(video.get("title_visual_similarity"))),
              ("ASR language", esc(video.get("asr_language")) + (
                  f" (p={fmt(video.get('asr_language_probability'), 2)})"
                  if video.get("asr_language_probability") is not None else "")),
              ("speech seconds", fmt(video.get("speech_seconds"), 1))]
    parts = [f'<p><a href="{esc(index_href)}">&larr; all videos</a></p><h1>{esc(title)}</h1>',
             random_weights_banner(metadata), table(["", ""], scores, cls="scores")]
    if no_pictures:
        parts.append(f'<p class="warn" id="no-pictures">No pictures: {esc(no_pictures)}</p>')
    keyframes = [f for f in frames if f["reason"] != "text"]
    figures = []
    for f in keyframes:
        href = thumbs.get(f["frame_index"])
        img = (f'<img src="{esc(href)}" alt="frame {f["frame_index"]}" loading="lazy">' if href else "")
        token = f["token"] if f.get("token") is not None else "-"
        figures.append(f'<figure class="keyframe">{img}<figcaption>{fmt(f["timestamp_s"], 2)} s &middot; '
                       f'<span style="color:{REASON_COLORS.get(f["reason"], "#000")}">{esc(f["reason"])}</span>'
                       f" &middot; token {esc(token)}</figcaption></figure>")
    parts.append(f"<h2>Keyframes ({len(keyframes)})</h2><div class=\"strip\">{''.join(figures)}</div>")
    parts.append(f"<h2>Timeline</h2>{legend(REASON_COLORS, 'reason')}"
                 f"{timeline_svg(video.get('duration_s'), frames, segments)}")
    read = [f for f in frames if f.get("ocr")]
    ocr_figs = [f'<figure class="ocr-frame" data-frame="{f["frame_index"]}">'
                f"{ocr_frame_svg(thumbs.get(f['frame_index']), w, h, f['ocr'])}"
                f"<figcaption>{fmt(f['timestamp_s'], 2)} s &middot; {esc(f['reason'])} &middot; "
                f"{len(f['ocr'])} lines</figcaption></figure>" for f in read]
    off = all(f.get("ocr") is None for f in frames)
    parts.append(f"<h2>On-screen text: {sum(len(f['ocr']) for f in read)} lines read on {len(read)} frames</h2>"
                 + ("<p class=muted>OCR was off or failed for this video.</p>" if off and frames else "")
                 + legend(DOMAIN_COLORS, "domain") + f'<div class="ocr">{"".join(ocr_figs)}</div>')
    for domain in ("subtitle", "overlay", "scene"):
        text = video.get(f"ocr_{domain}_text")
        items = "".join(f'<li class="line line-{domain}">{esc(line)}</li>' for line in (text or "").split("\n") if line)
        parts.append(f"<h3>{domain} lines</h3>" + (f'<ul class="lines" id="lines-{domain}">{items}</ul>' if items
                                                   else "<p class=muted>none</p>"))
    seg_rows = ([num_cell(s["start_s"], 2), num_cell(s["end_s"], 2), f'<td class="segment-text">{esc(s["text"])}</td>']
                for s in segments)
    parts.append(f"<h2>Transcript ({len(segments)} segments)</h2>"
                 + (table(["start s", "end s", "text"], seg_rows, table_id="transcript") if segments else
                    "<p class=muted>no speech transcribed</p>"))
    stage_errors = video.get("stage_errors") or []
    parts.append(f"<h2>Stage errors ({len(stage_errors)})</h2>" + (table(
        ["stage", "error type", "message"],
        ([esc(e.get("stage")), esc(e.get("error_type")), esc(e.get("message"))] for e in stage_errors),
        table_id="stage-errors") if stage_errors else "<p class=muted>none</p>"))
    return document(f"{title} - vmm report", "".join(parts))
