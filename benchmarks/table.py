"""The results table of ``run.py``: each figure beside its target, batchgen's ratio to the baseline,
and a before/after table where the previous main ran too (``--previous``)."""

from __future__ import annotations

from typing import Any

__all__ = ["TABLE", "markdown_table", "ratio"]


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# (scenario, metric, label) in table order; the target comes from the scenario.
TABLE = [
    ("P1", "cpu_ms_per_image", "worker CPU ms / image"),
    ("P1", "images_per_s", "images / s"),
    ("P2", "polls_per_image", "status polls / image"),
    ("P2", "ready_to_fetch_median_pct", "median ready→fetch, % of mean latency"),
    ("P2h", "polls_per_image", "status polls / image"),
    ("P2h", "ready_to_fetch_median_pct", "median ready→fetch, % of mean latency"),
    ("P2f", "polls_per_image", "status polls / image"),
    ("P2f", "ready_to_fetch_median_pct", "median ready→fetch, % of mean latency"),
    ("P3", "submits_per_min_pct_of_limit", "accepted submits/min, % of limit"),
    ("P3", "rate_limited_pct", "429s, % of submits"),
    ("P3d", "submits_per_min_pct_of_limit", "accepted submits/min, % of limit"),
    ("P3d", "rate_limited_pct", "429s, % of submits"),
    ("P4", "peak_rss_mb", "worker peak RSS (the whole run), MB"),
    ("P4", "plan_s", "batchgen plan (fresh folder), s"),
    ("P4", "plan_cpu_s", "batchgen plan, CPU s"),
    ("P4", "plan_peak_rss_mb", "batchgen plan, peak RSS MB"),
    ("P4", "resume_s", "resume of the finished run, s"),
    ("P4", "resume_cpu_s", "resume of the finished run, CPU s"),
    ("P4", "resume_requests", "requests made by that resume"),
    ("P4m", "plan_s", "batchgen plan (fresh folder), s"),
    ("P4m", "plan_cpu_s", "batchgen plan, CPU s"),
    ("P4m", "plan_peak_rss_mb", "batchgen plan, peak RSS MB"),
    ("P4m", "replay_s", "replay of the finished 1M-item ledger, s"),
    ("P4m", "replay_cpu_s", "that replay, CPU s"),
    ("P5", "makespan_vs_ideal", "makespan / ideal"),
    ("P6", "images_per_scaled_min", "images per scaled minute"),
    ("P6", "requests_per_image", "requests / image"),
    ("P6h", "images_per_scaled_min", "images per scaled minute"),
    ("P6h", "requests_per_image", "requests / image"),
]


def _met(value: Any, target: str | None) -> str:
    if value is None or not target:
        return ""
    op, num = target.split()
    v, t = float(value), float(num)
    ok = {"<=": v <= t, ">=": v >= t, "==": v == t}[op]
    return "yes" if ok else "**no**"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Each figure beside its target and, where one ran, the baseline and batchgen's ratio to it."""
    by_id = {r["id"]: r for r in rows}
    out = [
        "| id | metric | batchgen | target | met | baseline | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for sid, key, label in TABLE:
        r = by_id.get(sid)
        if r is None:
            continue
        v = r.get(key)
        target = r["targets"].get(key)
        bl = r.get("baseline") or {}
        bv = bl.get(key)
        times = ratio(v, bv) if isinstance(v, int | float) and isinstance(bv, int | float) else None
        out.append(f"| {sid} | {label} | {v} | {target or ''} | {_met(v, target)} | "
                   f"{'' if bv is None else bv} | {'' if times is None else f'{times}×'} |")
    before = [r for r in rows if r.get("previous")]
    if before:
        out += ["", "| id | metric | previous main | this branch | target |", "| --- | --- | --- | --- | --- |"]
        for r in before:
            shown = ([(key, label) for sid, key, label in TABLE if sid == r["id"]] if r["id"].startswith(("P4", "P6"))
                     else [("cpu_ms_per_image", "worker CPU ms / image"), ("images_per_s", "images / s")]
                     if r["id"] == "P1"
                     else [("polls_per_image", "status polls / image"),
                           ("ready_to_fetch_median_pct", "median ready→fetch, % of mean"),
                           ("cpu_ms_per_image", "worker CPU ms / image")])
            for key, label in shown:
                out.append(f"| {r['id']} | {label} | {r['previous'].get(key)} | {r.get(key)} | "
                           f"{r['targets'].get(key, '')} |")
    out += ["", "| id | batchgen vs baseline | CPU / image | requests / image | wall time |",
            "| --- | --- | --- | --- | --- |"]
    for r in rows:
        vs = r.get("vs_baseline")
        if vs:
            out.append(f"| {r['id']} | {r['baseline']['kind']} | {vs['cpu_per_image']}× | "
                       f"{vs['requests_per_image']}× | {vs['wall']}× |")
    return "\n".join(out)
