"""A check of the CronJob schedule syntax Kubernetes accepts (five fields, names, steps, macros).

No cron library is a dependency, and the controller's rules are few: each field a list of `*`,
`N` or `N-M`, each optionally `/STEP`; `?` in day-of-month or day-of-week; month and weekday names.
"""

from __future__ import annotations

MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
MONTHS = {m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
FIELDS = (  # name, low, high, names
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)


def _value(text: str, low: int, high: int, names: dict[str, int]) -> int | None:
    n = names.get(text.upper()) if not text.isdigit() else int(text)
    return n if n is not None and low <= n <= high else None


def _part(part: str, low: int, high: int, names: dict[str, int], question: bool) -> str | None:
    base, _, step = part.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        return f"bad step {step!r}"
    if base == "*" or (question and base == "?" and not step):
        return None
    first, _, last = base.partition("-")
    a = _value(first, low, high, names)
    b = _value(last, low, high, names) if last else a
    if a is None or b is None:
        return f"{base!r} is outside {low}-{high}"
    return f"range {base!r} runs backwards" if a > b else None


def check_cron(expr: str) -> str | None:
    """None when Kubernetes would accept the schedule, else what is wrong with it."""
    if expr.startswith("@"):
        return None if expr in MACROS else f"unknown macro {expr!r}"
    fields = expr.split()
    if len(fields) != 5:
        return f"expected 5 fields, got {len(fields)}"
    for text, (name, low, high, names) in zip(fields, FIELDS, strict=True):
        for part in text.split(","):
            error = _part(part, low, high, names, question=name.startswith("day"))
            if error:
                return f"{name}: {error}"
    return None
