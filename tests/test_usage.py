"""``agent.usage``: every token each provider reported, by kind, summed over every connection.

Checked against what each simulator put on the wire (its own record of what
it sent), field by field, over a conversation with a tool call and a dropped
connection: a number the provider sent is never lost or left at zero. Then
the arithmetic of :class:`Usage` and :class:`Prices` on their own.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bidi_core import (
    BidiAgent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiResponseCompleteEvent,
    BidiUsageError,
)
from bidi_core.usage import Prices, Usage
from ports.events import BidiOutputEvent, BidiUsageEvent, ModalityUsage
from tests.support import RecordingOutput, Texts, finals, run_until
from tests.test_providers_common import FAST_RETRY, PROVIDERS, Provider, get_weather, simulator


def _openai_sent(sim: Any) -> Counter[str]:
    """The sum of every ``response.done`` usage the simulator sent, on every connection."""
    total: Counter[str] = Counter()
    for record in sim.connections:
        for event in record.sent:
            if event.get("type") != "response.done":
                continue
            usage = event["response"]["usage"]
            inp, out = usage["input_token_details"], usage["output_token_details"]
            cached = inp["cached_tokens_details"]
            total.update(
                reports=1,
                input=usage["input_tokens"],
                output=usage["output_tokens"],
                total=usage["total_tokens"],
                cached=inp["cached_tokens"],
                input_text=inp["text_tokens"],
                input_audio=inp["audio_tokens"],
                cached_text=cached["text_tokens"],
                cached_audio=cached["audio_tokens"],
                output_text=out["text_tokens"],
                output_audio=out["audio_tokens"],
            )
    return total


def _gemini_sent(sim: Any) -> Counter[str]:
    """The sum of every ``usageMetadata`` the simulator sent."""
    total: Counter[str] = Counter()
    for record in sim.connections:
        for message in record.sent:
            usage = message.get("usageMetadata")
            if usage is None:
                continue
            total.update(
                reports=1,
                input=usage.get("promptTokenCount", 0),
                output=usage.get("responseTokenCount", 0),
                total=usage.get("totalTokenCount", 0),
                cached=usage.get("cachedContentTokenCount", 0),
            )
            for key, kind in (("promptTokensDetails", "input"), ("responseTokensDetails", "output")):
                for entry in usage.get(key, []):
                    total[f"{kind}_{entry['modality'].lower()}"] += entry["tokenCount"]
            for entry in usage.get("cacheTokensDetails", []):
                total[f"cached_{entry['modality'].lower()}"] += entry["tokenCount"]
    return total


def _nova_sent(sim: Any) -> Counter[str]:
    """Nova reports running totals per stream: the last report of each stream, summed over the streams."""
    total: Counter[str] = Counter()
    for stream in sim.streams:
        reports = stream.sent_events("usageEvent")
        if not reports:
            continue
        total["reports"] += len(reports)
        last = reports[-1]
        sides = last["details"]["total"]
        total.update(
            input=last["totalInputTokens"],
            output=last["totalOutputTokens"],
            total=last["totalTokens"],
            input_text=sides["input"]["textTokens"],
            input_audio=sides["input"]["speechTokens"],
            output_text=sides["output"]["textTokens"],
            output_audio=sides["output"]["speechTokens"],
        )
    return total


SENT = {"openai": _openai_sent, "gemini": _gemini_sent, "nova_sonic": _nova_sent}


def _ours(usage: Usage) -> Counter[str]:
    counted: Counter[str] = Counter(
        input=usage.input_tokens, output=usage.output_tokens, total=usage.total_tokens, cached=usage.cached_input_tokens
    )
    for m in (usage.text, usage.audio, usage.image):
        counted.update(
            {
                f"input_{m.modality}": m.input_tokens,
                f"output_{m.modality}": m.output_tokens,
                f"cached_{m.modality}": m.cached_input_tokens,
            }
        )
    return counted


@pytest.mark.parametrize("provider", PROVIDERS, ids=[p.name for p in PROVIDERS])
async def test_usage_is_what_the_provider_sent_summed_over_every_connection(provider: Provider) -> None:
    """A turn, a dropped connection, then a tool round trip on the next connection."""
    s = provider.sim
    calls = [s.ToolCall("get_weather", {"location": "Paris"}, "call-1")]
    scenario = s.Scenario(
        rules=[
            s.Rule(text_contains="weather", reply=s.Reply(tool_calls=calls)),
            s.Rule(tool_result_for="get_weather", reply=s.Reply(say="It is {result}.")),
            s.Rule(text_contains="drop", times=1, reply=s.Reply(drop=True)),
        ]
    )
    async with simulator(provider, scenario=scenario) as sim:
        agent = BidiAgent(model=provider.model(sim), tools=[get_weather], reconnect=FAST_RETRY)
        out = RecordingOutput()
        texts = Texts(["hello", "please drop", "weather please"])

        async def release_after_restart(event: BidiOutputEvent) -> None:
            if isinstance(event, BidiConnectionRestartEvent):
                texts.ready.set()  # the dropped turn never completes; the user goes on talking

        def answered_after_the_drop() -> bool:
            restart = next((e for e in out.events if isinstance(e, BidiConnectionRestartEvent)), None)
            if restart is None:
                return False
            after = out.events[out.events.index(restart) :]
            completed = any(isinstance(e, BidiResponseCompleteEvent) and e.stop_reason == "complete" for e in after)
            answered = completed and any(f.startswith("It is") for f in finals(out, "assistant"))
            # and its usage report, which may come after the final transcript, was read: one report per
            # response (the greeting, the tool call, the answer), and each provider sends it after the
            # response's last word, so comparing with the simulator's count alone could stop one early
            return answered and agent.usage.reports == SENT[provider.name](sim)["reports"] == 3

        await run_until(agent, [texts], [out, texts.observe, release_after_restart], answered_after_the_drop)
        sent = SENT[provider.name](sim)
        reported = out.of(BidiUsageEvent)

    assert sent["input"] > 0 and sent["output"] > 0 and sent["input_text"] > 0 and sent["output_audio"] > 0
    if provider.name != "nova_sonic":  # Nova Sonic reports no cache
        assert sent["cached"] > 0 and sent["cached_text"] > 0
    ours = _ours(agent.usage)
    ours["reports"] = agent.usage.reports
    assert {k: v for k, v in ours.items() if v} == {k: v for k, v in sent.items() if v}
    assert agent.usage.reports == len(reported)
    assert len(out.of(BidiConnectionStartEvent)) == 2  # the sum covers both connections
    assert [c.stop_reason for c in out.of(BidiResponseCompleteEvent)].count("complete") >= 2


# ---------------------------------------------------------------- the arithmetic


def test_reports_add_up_by_kind() -> None:
    usage = Usage()
    usage = usage.add(
        BidiUsageEvent(
            100,
            40,
            140,
            (ModalityUsage("text", 60, 10, 50), ModalityUsage("AUDIO", 40, 30)),
            cache_read_input_tokens=50,
        )
    )
    usage = usage.add(BidiUsageEvent(10, 5, 15, (ModalityUsage("audio", 10, 5),), cache_write_input_tokens=3))
    usage = usage.add(BidiUsageEvent(7, 2, 9))  # no modality given
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (117, 47, 164)
    assert (usage.cached_input_tokens, usage.cache_write_input_tokens, usage.reports) == (50, 3, 3)
    assert usage.text == ModalityUsage("text", 60, 10, 50)
    assert usage.audio == ModalityUsage("audio", 50, 35, 0)
    kinds = usage.by_kind()
    assert kinds["input_unattributed"] == 7 and kinds["output_unattributed"] == 2
    assert kinds["cached_input_unattributed"] == 0


def test_cost_prices_cached_input_apart_and_the_unattributed_as_text() -> None:
    usage = Usage().add(
        BidiUsageEvent(
            3_000_000,
            2_000_000,
            5_000_000,
            (ModalityUsage("text", 1_000_000, 1_000_000, 400_000), ModalityUsage("audio", 1_000_000, 1_000_000)),
            cache_read_input_tokens=400_000,
        )
    )
    prices = Prices(input_text=4, cached_input_text=0.5, input_audio=32, output_text=16, output_audio=64)
    # text: 0.6 M full + 0.4 M cached + 1 M unattributed input (as text); 1 M output. audio: 1 M in, 1 M out.
    expected = 0.6 * 4 + 0.4 * 0.5 + 1 * 4 + 1 * 16 + 1 * 32 + 1 * 64
    assert usage.cost(prices) == pytest.approx(expected)
    # Without a cached price, cached input costs what the rest does.
    assert usage.cost(Prices(input_text=4)) == pytest.approx(2 * 4)


def test_cached_tokens_without_a_modality_are_not_charged_twice() -> None:
    usage = Usage().add(BidiUsageEvent(1_000_000, 0, 1_000_000, (ModalityUsage("text", 1_000_000, 0),), 250_000))
    assert usage.cost(Prices(input_text=4, cached_input_text=1)) == pytest.approx(0.75 * 4 + 0.25 * 1)


@pytest.mark.parametrize("bad", [-1, "1", True, float("nan")])
def test_a_price_must_be_a_number_not_below_zero(bad: Any) -> None:
    with pytest.raises(BidiUsageError, match="input_audio"):
        Prices(input_audio=bad)
