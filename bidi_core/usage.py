"""What a conversation used: tokens by kind, summed over every connection, and their price.

Providers report usage in their own shapes; each adapter turns a report into
a :class:`~ports.events.BidiUsageEvent` holding what that report adds. The
conversation state machine sums them into one :class:`Usage` (``agent.usage``),
whatever connection they came over. Pure, like the machine: no clock, no I/O.

Kinds: input or output, by modality (text, audio, image), and the cached part
of the input (which OpenAI and Gemini count inside the input tokens, and bill
at a lower rate). Tokens a provider reported without saying their modality
are counted in the totals and priced as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ports.errors import BidiUsageError
from ports.events import BidiUsageEvent, ModalityUsage

__all__ = ["Prices", "Usage"]

_MODALITIES = ("text", "audio", "image")


def _price(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise BidiUsageError(f"Prices.{attribute.name} must be a number >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Prices:
    """What a million tokens of each kind cost (in whatever currency the numbers are).

    ``cached_input_*`` price the cached part of the input; ``None`` prices it
    like the uncached input. Pass the provider's published list for the model
    you use, e.g. ``Prices(input_text=4.0, cached_input_text=0.4,
    input_audio=32.0, cached_input_audio=0.4, output_text=16.0,
    output_audio=64.0)``.
    """

    input_text: float = attrs.field(default=0.0, validator=_price)
    input_audio: float = attrs.field(default=0.0, validator=_price)
    input_image: float = attrs.field(default=0.0, validator=_price)
    cached_input_text: float | None = attrs.field(default=None, validator=_price)
    cached_input_audio: float | None = attrs.field(default=None, validator=_price)
    cached_input_image: float | None = attrs.field(default=None, validator=_price)
    output_text: float = attrs.field(default=0.0, validator=_price)
    output_audio: float = attrs.field(default=0.0, validator=_price)
    output_image: float = attrs.field(default=0.0, validator=_price)

    def input(self, modality: str, *, cached: bool = False) -> float:
        price: float = getattr(self, f"input_{modality}")
        if cached:
            cached_price: float | None = getattr(self, f"cached_input_{modality}")
            return price if cached_price is None else cached_price
        return price

    def output(self, modality: str) -> float:
        price: float = getattr(self, f"output_{modality}")
        return price


@attrs.frozen
class Usage:
    """Every token a conversation's provider reported, summed over all its connections.

    ``input_tokens``/``output_tokens``/``total_tokens``: the providers' totals.
    ``cached_input_tokens``: the part of the input read from a cache;
    ``cache_write_input_tokens``: input written to one (where reported).
    ``text``, ``audio``, ``image``: the same split by modality. ``reports``: how
    many usage reports were summed.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    text: ModalityUsage = ModalityUsage("text")
    audio: ModalityUsage = ModalityUsage("audio")
    image: ModalityUsage = ModalityUsage("image")
    reports: int = 0

    def add(self, event: BidiUsageEvent) -> Usage:
        """This usage plus one more report."""
        by_modality = {m: getattr(self, m) for m in _MODALITIES}
        for detail in event.modality_details:
            name = detail.modality.lower()
            if name not in by_modality:
                continue  # a modality we have no field for: still in the totals
            seen = by_modality[name]
            by_modality[name] = ModalityUsage(
                name,
                seen.input_tokens + detail.input_tokens,
                seen.output_tokens + detail.output_tokens,
                seen.cached_input_tokens + detail.cached_input_tokens,
            )
        return Usage(
            input_tokens=self.input_tokens + event.input_tokens,
            output_tokens=self.output_tokens + event.output_tokens,
            total_tokens=self.total_tokens + event.total_tokens,
            cached_input_tokens=self.cached_input_tokens + (event.cache_read_input_tokens or 0),
            cache_write_input_tokens=self.cache_write_input_tokens + (event.cache_write_input_tokens or 0),
            reports=self.reports + 1,
            **by_modality,
        )

    def by_kind(self) -> Mapping[str, int]:
        """Tokens by kind: ``input_text``, ``cached_input_text``, ``output_audio``, ...;
        ``input_unattributed``/``output_unattributed``/``cached_input_unattributed``
        hold what a provider reported without a modality (never negative)."""
        kinds: dict[str, int] = {}
        for name in _MODALITIES:
            m: ModalityUsage = getattr(self, name)
            kinds[f"input_{name}"] = m.input_tokens
            kinds[f"cached_input_{name}"] = m.cached_input_tokens
            kinds[f"output_{name}"] = m.output_tokens
        modalities = [getattr(self, name) for name in _MODALITIES]
        kinds["input_unattributed"] = max(0, self.input_tokens - sum(m.input_tokens for m in modalities))
        kinds["cached_input_unattributed"] = max(
            0, self.cached_input_tokens - sum(m.cached_input_tokens for m in modalities)
        )
        kinds["output_unattributed"] = max(0, self.output_tokens - sum(m.output_tokens for m in modalities))
        return kinds

    def cost(self, prices: Prices) -> float:
        """What these tokens cost at ``prices`` (per million tokens). Cached input is
        priced at the cached rate and the rest of the input at the full one; tokens
        without a modality are priced as text."""
        kinds = self.by_kind()
        total = 0.0
        for name in _MODALITIES:
            inputs, cached, outputs = (kinds[f"{k}_{name}"] for k in ("input", "cached_input", "output"))
            if name == "text":  # what came without a modality counts as text
                inputs += kinds["input_unattributed"]
                cached += kinds["cached_input_unattributed"]
                outputs += kinds["output_unattributed"]
            uncached = max(0, inputs - cached)
            total += uncached * prices.input(name) + cached * prices.input(name, cached=True)
            total += outputs * prices.output(name)
        return total / 1_000_000
