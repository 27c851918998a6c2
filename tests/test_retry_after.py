"""Reading ``Retry-After`` (adapters/retry_after.py), and every transport's refusal carrying it."""

from __future__ import annotations

import email.utils

import pytest

from adapters.nova_sonic.errors import error_for_response as nova_refusal
from adapters.retry_after import retry_after_s
from adapters.websocket import upgrade_refusal
from ports.errors import BidiConnectionError, BidiProviderError

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": " 0 "}, 0.0),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
    ],
    ids=["absent", "seconds", "zero", "date", "date-in-the-past", "junk", "negative"],
)
def test_retry_after_reads_seconds_and_dates(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(headers, now=NOW) == expected


def test_a_websocket_refusal_carries_the_wait() -> None:
    limited = upgrade_refusal(429, {"retry-after": "5"}, b"slow down")
    assert isinstance(limited, BidiProviderError)
    assert limited.retryable
    assert limited.retry_after_s == 5.0
    unavailable = upgrade_refusal(503, {"retry-after": "2"}, b"")
    assert isinstance(unavailable, BidiConnectionError)
    assert unavailable.retryable
    assert unavailable.retry_after_s == 2.0
    assert upgrade_refusal(503, {}, b"").retry_after_s is None  # type: ignore[attr-defined]


def test_a_nova_refusal_carries_the_wait() -> None:
    error = nova_refusal(503, {"retry-after": "4", "x-amzn-requestid": "req-1"}, b'{"message": "busy"}')
    assert error.retryable
    assert error.retry_after_s == 4.0
