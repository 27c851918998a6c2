"""The carrier: places calls to a server as Twilio does, from its documentation (docs/protocols/twilio.md).

    sim = TwilioCarrierSimulator(auth_token="...", voice_url="https://phone.example.com/twilio/voice",
                                 connect=("127.0.0.1", port))
    async with sim.call() as call:          # webhook, TwiML, WebSocket, connected + start
        speech = call.say(pcm_8k)
        await call.wait_heard(500)
        await call.press("1")
        await call.hang_up()
    call.record                             # everything that happened

A call: ``POST`` the voice webhook with the call's parameters, signed with
``X-Twilio-Signature`` over the public ``voice_url``; read the TwiML; for
``<Connect><Stream url=...>`` open that WebSocket (dialled at ``connect``,
signed over its ``wss://`` URL, as the handshake of a real stream is) with the
``<Parameter>``\\ s as ``customParameters``, then play the stream
(:class:`~.call.SimulatedCall`). ``<Reject>`` and HTTP errors are recorded and
no stream opens. Leaving the block hangs up if nobody did, and waits until the
stream is over.
"""

from __future__ import annotations

import itertools
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio

from adapters.testing.twilio_simulator.call import CallRecord, SimulatedCall
from adapters.testing.twilio_simulator.transport import HttpAnswer, open_stream, post_form, twilio_signature

__all__ = ["TwilioCarrierSimulator"]

_ids = itertools.count(1)


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class TwilioCarrierSimulator:
    """Places simulated calls (see the module). ``calls`` keeps every call's :class:`CallRecord`.

    ``auth_token`` signs the requests; ``voice_url`` is the number's webhook as
    configured at Twilio (its host is what is signed); ``connect`` is where the
    simulator really dials (the server on 127.0.0.1 behind that public name).
    """

    def __init__(self, *, auth_token: str, voice_url: str, connect: tuple[str, int]) -> None:
        self._auth_token = auth_token
        self.voice_url = voice_url
        self.connect = connect
        self.account_sid = _sid("AC")
        self.calls: list[CallRecord] = []

    @asynccontextmanager
    async def call(
        self,
        *,
        caller: str = "+15550100",
        called: str = "+15550199",
        signature: str | None = None,
        signed: bool = True,
        stream_signature: str | None = None,
        stream_parameters: Mapping[str, str] | None = None,
        extra_parameters: Sequence[tuple[str, str]] = (),
        hang_up_on_exit: bool = True,
    ) -> AsyncIterator[SimulatedCall]:
        """One inbound call. ``signature``: send this instead of the real one (a forgery); ``signed=False``:
        no signature header; ``stream_signature``: likewise for the stream's upgrade; ``stream_parameters``:
        the ``customParameters`` of ``start`` instead of the TwiML's ``<Parameter>``\\ s (a stream someone
        opened without the webhook)."""
        record = CallRecord(call_sid=_sid("CA"), stream_sid=_sid("MZ"))
        self.calls.append(record)
        params = [
            ("AccountSid", self.account_sid),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", record.call_sid),
            ("CallStatus", "ringing"),
            ("Called", called),
            ("Caller", caller),
            ("Direction", "inbound"),
            ("From", caller),
            ("To", called),
            *extra_parameters,
        ]
        headers = []
        if signed:
            headers.append(
                ("X-Twilio-Signature", signature or twilio_signature(self._auth_token, self.voice_url, params))
            )
        host, port = self.connect
        parts = urlsplit(self.voice_url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        answer = await post_form(host, port, target, params, headers)
        record.webhook_status = answer.status
        call = SimulatedCall(record, self.account_sid, {})
        if answer.status != 200:
            call._ended.set()
            yield call
            return
        record.twiml = answer.body.decode()
        stream_url = self._read_twiml(record)
        if stream_url is None:
            call._ended.set()
            yield call
            return
        call._parameters = dict(record.parameters if stream_parameters is None else stream_parameters)
        url = urlsplit(stream_url)
        ws_headers = [
            ("X-Twilio-Signature", stream_signature or twilio_signature(self._auth_token, stream_url)),
        ]
        opened = await open_stream(host, port, url.path + (f"?{url.query}" if url.query else ""), ws_headers)
        if isinstance(opened, HttpAnswer):
            record.handshake_status = opened.status
            call._ended.set()
            yield call
            return
        record.handshake_status = 101
        async with anyio.create_task_group() as tg:
            await tg.start(call.run, opened)
            try:
                yield call
                if hang_up_on_exit:
                    await call.hang_up()
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await call.wait_ended()
                tg.cancel_scope.cancel()

    def _read_twiml(self, record: CallRecord) -> str | None:
        """The ``<Stream url>`` of a ``<Connect>``, its ``<Parameter>``\\ s into the record; None otherwise."""
        assert record.twiml is not None
        root = ET.fromstring(record.twiml)
        if root.tag != "Response":
            record.rejected = "not TwiML"
            return None
        reject = root.find("Reject")
        if reject is not None:
            record.rejected = reject.get("reason", "rejected")
            return None
        stream = root.find("Connect/Stream")
        if stream is None:
            record.rejected = "no <Connect><Stream>"
            return None
        record.stream_url = stream.get("url")
        for param in stream.findall("Parameter"):
            record.parameters[param.get("name", "")] = param.get("value", "")
        return record.stream_url
