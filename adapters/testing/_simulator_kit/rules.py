"""Which scenario rule fires: the first that matches and has not used up its ``times``.

Every simulator's scenario is an ordered list of rules over the user's turn:
its words (typed, or the transcript the scenario gives a spoken turn), which
spoken turn it was, and the tool results it carries. The services differ in
what a tool result is and in the default reply, so each simulator keeps its
``Rule``, ``TurnInput`` and defaults; the word conditions, the firing
bookkeeping and the transcripts of spoken turns are the same and live here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

__all__ = ["first_to_fire", "spoken_transcript", "words_match"]


class _Limited(Protocol):
    @property
    def times(self) -> int | None: ...


class _WordConditions(Protocol):
    @property
    def text_contains(self) -> str | None: ...
    @property
    def text_equals(self) -> str | None: ...
    @property
    def spoken_turn(self) -> int | None: ...


class _Turn(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def spoken_turn(self) -> int | None: ...


_Rule = TypeVar("_Rule", bound=_Limited)


def words_match(rule: _WordConditions, turn: _Turn) -> bool:
    """Whether ``turn``'s words (case-insensitive) and spoken-turn number meet ``rule``'s conditions on them.

    A condition that is None holds for any turn; the rule's other conditions (tool results) are its simulator's.
    """
    words = turn.text.strip().casefold()
    if rule.text_contains is not None and rule.text_contains.casefold() not in words:
        return False
    if rule.text_equals is not None and rule.text_equals.strip().casefold() != words:
        return False
    return rule.spoken_turn is None or rule.spoken_turn == turn.spoken_turn


def first_to_fire(rules: Sequence[_Rule], fired: dict[int, int], matches: Callable[[_Rule], bool]) -> _Rule | None:
    """The first rule that ``matches`` and has fired fewer than its ``times``; counted in ``fired`` (by index).

    None when no rule may fire: the simulator then plays its default.
    """
    for index, rule in enumerate(rules):
        if rule.times is not None and fired.get(index, 0) >= rule.times:
            continue
        if matches(rule):
            fired[index] = fired.get(index, 0) + 1
            return rule
    return None


def spoken_transcript(transcripts: Sequence[str], spoken_turn: int) -> str:
    """What the user said in spoken turn ``spoken_turn``; a placeholder past the list."""
    if spoken_turn < len(transcripts):
        return transcripts[spoken_turn]
    return f"(spoken turn {spoken_turn})"
