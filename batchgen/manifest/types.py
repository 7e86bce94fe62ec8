"""What loading a manifest gives: frozen items, limits, the manifest, and the one error it raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.core.errors import BatchgenError
from batchgen.models import get_model

__all__ = ["Item", "Limits", "Manifest", "ManifestError", "ManifestErrors"]


class ManifestError(BatchgenError):
    """A user mistake in a manifest; ``str()`` is the one line the CLI prints (exit code 2).

    ``final`` marks a mistake after which nothing more can be checked (the manifest is too large
    to go on): the loader reports it with the mistakes found before it and stops.
    """

    def __init__(self, path: str, line: int | None, field: str | None, message: str, *, final: bool = False) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = " ".join(str(message).split())
        self.final = final
        super().__init__(str(self))

    @property
    def errors(self) -> tuple[ManifestError, ...]:
        """Every mistake this error reports, in file order (one for a single mistake)."""
        return (self,)

    def __str__(self) -> str:
        path = _shown(self.path)
        where = path if self.line is None else f"{path}:{self.line}"
        what = self.message if not self.field else f"{_shown(self.field)}: {self.message}"
        return f"{where}: {what}"


def _shown(text: str) -> str:
    """A path or a field (made of the user's keys) on one line: a newline in a key is shown escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class ManifestErrors(ManifestError):
    """Several mistakes of one manifest, one line each in file order, then how many were not shown.

    Its ``path``, ``line``, ``field`` and ``message`` are the first mistake's, so code that reads
    one mistake reads the first.
    """

    def __init__(self, errors: list[ManifestError], more: int = 0) -> None:
        self._errors = tuple(errors)
        self.more = more
        first = self._errors[0]
        super().__init__(first.path, first.line, first.field, first.message)

    @property
    def errors(self) -> tuple[ManifestError, ...]:
        return self._errors

    def __str__(self) -> str:
        lines = [ManifestError.__str__(e) for e in self._errors]
        if self.more:
            lines.append(f"{self.more} more error{'s' if self.more > 1 else ''} not shown")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Item:
    """One request to make. Slotted: a million-row prompts file holds a million of these."""

    id: str
    params: Mapping[str, Any]  # the exact JSON body to POST: defaults merged under the item's values
    index: int  # 0-based position among the expanded items
    line: int  # 1-based line of the item in the file
    source: str | None = None  # the prompts file the item came from; None for the manifest itself


@dataclass(frozen=True)
class Limits:
    concurrency: int | None = None
    rpm: float | None = None
    max_cost_usd: float | None = None
    max_images: int | None = None


@dataclass(frozen=True)
class Manifest:
    path: Path
    name: str
    model: str
    output: Path  # as written, or out/<name>; relative to the current directory
    items: tuple[Item, ...]
    limits: Limits
    price_usd: float | None  # the manifest's override of the model's listed price, if any
    warnings: tuple[str, ...] = field(default=())

    @property
    def price_per_image_usd(self) -> float | None:
        """Override first, then the model table; None when neither knows (unknown slug)."""
        if self.price_usd is not None:
            return self.price_usd
        spec = get_model(self.model)
        return spec.price_usd if spec is not None else None
