"""Fault injection: which misbehaviour, if any, a given request gets.

One seeded ``random.Random`` decides every fault so that a run with ``fault_seed`` is
repeatable. Each class of request makes exactly one draw against the cumulative probabilities
of the faults that apply to it, so every kind shows up at its configured rate even when several
are enabled together.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from batchgen.core.errors import BatchgenError

__all__ = [
    "API_FAULTS",
    "FAULT_KINDS",
    "FaultPlan",
    "FaultSpecError",
    "parse_faults",
]

# Faults that replace or disturb the answer of any keyed API request (submit/status/result/credits).
API_FAULTS: tuple[str, ...] = ("429", "500", "502", "504", "reset", "slow")
# ``lost`` only makes sense for a submit, ``failed`` decides a job's fate, ``truncate`` hits downloads.
FAULT_KINDS: tuple[str, ...] = (*API_FAULTS, "lost", "failed", "truncate")


class FaultSpecError(BatchgenError, ValueError):
    """A ``--faults`` spec that cannot be honoured; the message is fit for one line of stderr."""


def parse_faults(spec: str | Mapping[str, float] | None) -> dict[str, float]:
    """``"429=0.2,reset=0.02"`` → ``{"429": 0.2, "reset": 0.02}``, refusing anything ambiguous."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise FaultSpecError(f"fault {part!r} needs a probability, e.g. {part}=0.05")
            try:
                prob = float(value)
            except ValueError:
                raise FaultSpecError(
                    f"fault {name.strip()!r}: probability {value.strip()!r} is not a number"
                ) from None
            items.append((name.strip(), prob))
    faults: dict[str, float] = {}
    for name, prob in items:
        if name not in FAULT_KINDS:
            raise FaultSpecError(f"unknown fault {name!r} (known: {', '.join(FAULT_KINDS)})")
        if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0.0 <= prob <= 1.0:
            raise FaultSpecError(f"fault {name!r}: probability must be between 0 and 1, got {prob!r}")
        if name in faults:
            raise FaultSpecError(f"fault {name!r} given twice")
        faults[name] = float(prob)
    api_total = sum(faults.get(k, 0.0) for k in (*API_FAULTS, "lost"))
    if api_total > 1.0 + 1e-9:
        raise FaultSpecError(
            f"probabilities of {', '.join((*API_FAULTS, 'lost'))} add up to {api_total:g}, more than 1"
        )
    return faults


@dataclass
class FaultPlan:
    """Seeded decisions; ``None`` from a ``draw_*`` method means the request behaves normally."""

    probabilities: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _pick(self, kinds: tuple[str, ...]) -> str | None:
        active = [(k, self.probabilities.get(k, 0.0)) for k in kinds]
        if not any(p for _, p in active):
            return None
        u = self.rng.random()
        acc = 0.0
        for kind, p in active:
            acc += p
            if u < acc:
                return kind
        return None

    def draw_api(self, is_submit: bool) -> str | None:
        """The fault of one keyed API request (``lost`` only for submits)."""
        return self._pick((*API_FAULTS, "lost") if is_submit else API_FAULTS)

    def draw_failed(self) -> bool:
        """Whether an accepted job is doomed to end FAILED; decided once, at submission."""
        return self._pick(("failed",)) == "failed"

    def draw_truncate(self) -> bool:
        """Whether one image download is cut short."""
        return self._pick(("truncate",)) == "truncate"
