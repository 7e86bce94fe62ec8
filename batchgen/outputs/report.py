"""One self-contained HTML page about an output folder: something to open in a browser the morning
after a nightly run, or to attach to a ticket, with no server and no other file to carry along.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path

from batchgen.models import Filter, report_filters
from batchgen.outputs.catalog import Catalog, Record
from batchgen.store import ledger as L

__all__ = ["render_report", "thumbnail"]

THUMB_PX = 256
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def thumbnail(path: Path) -> tuple[str, bytes]:
    """(mime, bytes) of a small preview; the original when Pillow is not installed (CSS sizes it)."""
    data = path.read_bytes()
    try:
        from PIL import Image
    except ImportError:
        return _MIME.get(path.suffix.lower(), "image/png"), data
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.thumbnail((THUMB_PX, THUMB_PX))
            out = io.BytesIO()
            im.convert("RGB").save(out, "JPEG", quality=80)
            return "image/jpeg", out.getvalue()
    except Exception:  # an odd file still shows, at full size
        return _MIME.get(path.suffix.lower(), "image/png"), data


def _e(v: object) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _svg_bars(values: list[float], labels: list[str], width: int = 560, height: int = 140,
              color: str = "#4a7bd0", title: str = "") -> str:
    top = max(values) if values and max(values) > 0 else 1
    n = max(1, len(values))
    bw = width / n
    bars = []
    for i, (v, lab) in enumerate(zip(values, labels, strict=True)):
        h = (height - 20) * v / top
        bars.append(
            f'<rect x="{i * bw + 1:.1f}" y="{height - 20 - h:.1f}" width="{max(1.0, bw - 2):.1f}" '
            f'height="{h:.1f}" fill="{color}"><title>{_e(lab)}: {v:g}</title></rect>'
        )
    first, last = (labels[0], labels[-1]) if labels else ("", "")
    return (
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(bars)}'
        f'<text x="0" y="{height - 4}" font-size="11">{_e(first)}</text>'
        f'<text x="{width}" y="{height - 4}" font-size="11" text-anchor="end">{_e(last)}</text></svg>'
    )


def _latency_histogram(recs: list[Record]) -> str:
    lat = [r.latency_s if r.latency_s is not None else r.inference_time for r in recs]
    vals = [v for v in lat if v is not None]
    if not vals:
        return "<p>No completed request yet.</p>"
    lo, hi = min(vals), max(vals)
    bins = 12
    step = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in vals:
        counts[min(bins - 1, int((v - lo) / step))] += 1
    labels = [f"{lo + i * step:.1f}-{lo + (i + 1) * step:.1f} s" for i in range(bins)]
    return _svg_bars([float(c) for c in counts], labels, title="latency histogram") + (
        f"<p>{len(vals)} requests, median {sorted(vals)[len(vals) // 2]:.1f} s, max {hi:.1f} s</p>"
    )


def _timeline(cat: Catalog) -> str:
    done = [r.downloaded_ts for r in cat.records.values() if r.downloaded_ts is not None]
    if not done and not cat.rate_limited_ts:
        return "<p>Nothing downloaded yet.</p>"
    start, end = cat.started_ts or 0.0, cat.ended_ts or 0.0
    buckets = 30
    step = max(1e-6, (end - start) / buckets)

    def bucketize(ts: list[float]) -> list[float]:
        c = [0.0] * buckets
        for t in ts:
            c[min(buckets - 1, max(0, int((t - start) / step)))] += 1
        return c

    labels = [f"+{i * step:.0f} s" for i in range(buckets)]
    return (
        "<h3>Images downloaded per interval</h3>" + _svg_bars(bucketize(done), labels, title="throughput")
        + f"<h3>429 answers: {cat.rate_limited_total} in all (every request, as each run's summary counts them);"
        f" those to submits per interval</h3>"
        + _svg_bars(bucketize(cat.rate_limited_ts), labels, color="#d0544a", title="rate limited submits")
        + f"<p>Each interval is {step:.1f} s.</p>"
    )


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{width:200px;border:1px solid #ccc;border-radius:6px;padding:6px;background:#fafafa}
.card img{width:100%;height:180px;object-fit:contain;background:#eee;display:block}
.card .none{height:180px;display:flex;align-items:center;justify-content:center;background:#f3e0e0}
.card p{margin:4px 0;font-size:12px;word-break:break-word}.card .id{font-weight:600}
.card.hidden{display:none}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
.chart{background:#f7f7f7;border:1px solid #ddd}
"""

_JS = """
function applyFilters(){
  // one <select id="f-KEY"> per filter; a card shows when each chosen value equals its data-KEY
  const f=[...document.querySelectorAll('select[id^="f-"]')].map(s=>[s.id.slice(2),s.value]).filter(([,v])=>v);
  let shown=0;
  document.querySelectorAll('.card').forEach(c=>{
    const ok=f.every(([k,v])=>c.getAttribute('data-'+k)===v);
    c.classList.toggle('hidden',!ok); if(ok) shown++;});
  document.getElementById('shown').textContent=shown;
}
document.querySelectorAll('select').forEach(s=>s.addEventListener('change',applyFilters));
window.addEventListener('load',()=>{
  const imgs=[...document.querySelectorAll('.card img')];
  const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;
  document.getElementById('rendered').textContent=ok;
  document.body.dataset.rendered=ok; document.body.dataset.images=imgs.length;
  // #state=failed&style=ANIME preselects filters, so a link can point at a slice of the batch
  new URLSearchParams(location.hash.slice(1)).forEach((v,k)=>{
    const s=document.getElementById('f-'+k); if(s) s.value=v;});
  applyFilters();
});
"""


def _select(ident: str, label: str, values: list[str]) -> str:
    opts = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
    return f'<label>{label} <select id="{ident}"><option value="">all</option>{opts}</select></label> '


def _filters(recs: list[Record]) -> list[tuple[Filter, list[str]]]:
    """The model entries' report filters whose parameter some item has, with the values seen."""
    out = []
    for f in report_filters():
        values = sorted({str(v) for r in recs if (v := (r.params or {}).get(f.param))})
        if values:
            out.append((f, values))
    return out


def render_report(cat: Catalog, title: str | None = None) -> str:
    """The whole page as one string; images are embedded as data URIs."""
    recs = list(cat.records.values())
    states = Counter(r.state for r in recs)
    filters = _filters(recs)
    cards = []
    for r in recs:
        p = r.params or {}
        attrs = "".join(f' data-{f.key}="{_e(p.get(f.param, ""))}"' for f, _ in filters)
        image = cat.image(r)  # never a file outside the folder, nor one that is not the recorded image
        if image is not None:
            mime, data = thumbnail(image)
            pic = f'<img alt="{_e(r.id)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'
        else:
            pic = f'<div class="none">{_e(r.state)}</div>'
        extra = {k: v for k, v in p.items() if k != "prompt"}
        cards.append(
            f'<div class="card" data-state="{_e(r.state)}"{attrs}>{pic}'
            f'<p class="id">{_e(r.id)}</p><p>{_e(p.get("prompt", ""))}</p>'
            f"<p><code>{_e(json.dumps(extra, ensure_ascii=False))}</code></p>"
            + (f'<p class="err">{_e(r.error)}</p>' if r.error else "") + "</div>"
        )
    failed = [r for r in recs if r.state == L.FAILED]
    fail_rows = "".join(
        f"<tr><td>{_e(r.id)}</td><td>{_e(r.stage)}</td><td>{_e(r.status)}</td><td>{_e(r.error)}</td>"
        f"<td>{'yes' if r.retryable else 'no'}</td></tr>"
        for r in failed
    )
    paid = sum(1 for r in recs if r.cost_usd is not None)
    name = title or cat.out_dir.name
    count_items = "".join(f'<li>{_e(s)}: <span class="count" id="count-{_e(s)}">{n}</span></li>'
                          for s, n in sorted(states.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>batchgen report: {_e(name)}</title>
<style>{_CSS}</style></head>
<body data-items="{len(recs)}">
<h1>batchgen report: {_e(name)}</h1>
<p><span id="total">{len(recs)}</span> items over {cat.runs} run(s); images rendered:
<span id="rendered">?</span></p>
<ul>{count_items}</ul>
<h2>Spend</h2>
<p>$<span id="spent">{cat.spent_usd:.2f}</span> reported by the service for {paid} image(s);
{cat.paid_submits} accepted submits.</p>
<h2>Images</h2>
<p>{_select("f-state", "state", sorted(states))}{"".join(_select(f"f-{f.key}", f.label, vs) for f, vs in filters)}
showing <span id="shown">{len(recs)}</span></p>
<div class="cards">{"".join(cards)}</div>
<h2>Failures (<span id="failures">{len(failed)}</span>)</h2>
{"<table><tr><th>item</th><th>stage</th><th>status</th><th>reason</th><th>retried next run</th></tr>" + fail_rows + "</table>" if failed else "<p>None.</p>"}
<h2>Latency</h2>
{_latency_histogram(recs)}
<h2>Timeline</h2>
{_timeline(cat)}
<script>{_JS}</script>
</body></html>
"""
