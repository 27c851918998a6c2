"""One bidirectional stream: verify and check what comes in, play the model on what goes out.

The HTTP/2 layer hands :class:`StreamSession` the request body as it arrives
(:meth:`~StreamSession.on_data`, synchronous, so the connection's reader never
waits on the model) and runs :meth:`~StreamSession.run`, the model's task, which
is the only writer of the stream's response body. They meet in a small command
queue; an exception, a reset or the end of the prompt jumps the queue and stops
the reply in progress at the next message boundary (a message is never cut).

Inbound, per message (docs/protocols/nova_sonic.md#message-envelopes): the outer headers must be exactly
``:date`` (timestamp) and ``:chunk-signature`` (32 bytes); the signature must be
the next one in the chain; the payload is either empty (the end marker) or an
inner ``chunk`` event whose JSON ``bytes`` field holds the base64 event, which
must pass the strict schema and the order rules. The first failure is answered
with a ``validationException`` and ends the stream, as the service does.

Outbound, per turn (docs/protocols/nova_sonic.md#output-events): USER TEXT FINAL (the "ASR" of a spoken turn), then
ASSISTANT TEXT SPECULATIVE, ASSISTANT AUDIO (24 kHz) and ASSISTANT TEXT FINAL,
then TOOL contents (contentEnd ``TOOL_USE``) if the reply calls tools, then a
``usageEvent``. User speech while the assistant's audio is still going out is a
barge-in: the audio content ends ``INTERRUPTED`` and the FINAL text content is
``{ "interrupted" : true }`` with ``INTERRUPTED``. *Inference*: the placement of
the FINAL text after the audio, and the stop reasons PARTIAL_TURN for
speculative text, follow the samples docs/protocols/nova_sonic.md#output-events cites, not a capture.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import anyio
import attrs

from adapters.testing._simulator_kit.scenario import ToolResult, TurnInput, spoken_words
from adapters.testing.nova_sonic_simulator.audio import ENDPOINTING_SILENCE_MS, OUTPUT_RATE, EnergyVAD, pcm_ms, tone
from adapters.testing.nova_sonic_simulator.errors import ServiceException, SimulatorBug
from adapters.testing.nova_sonic_simulator.eventstream import (
    HeaderType,
    Message,
    MessageDecoder,
    MessageFormatError,
    decode_message,
    encode_message,
    string_headers,
)
from adapters.testing.nova_sonic_simulator.order import Accepted, InputOrder, OrderError
from adapters.testing.nova_sonic_simulator.output_schema import check_output_event
from adapters.testing.nova_sonic_simulator.records import SchemaFailure, SignatureFailure, StreamRecord
from adapters.testing.nova_sonic_simulator.scenario import Fault, Reply, ScenarioState
from adapters.testing.nova_sonic_simulator.schema import SchemaError, parse_event
from adapters.testing.nova_sonic_simulator.sigv4 import ChunkChain

__all__ = ["SessionOptions", "SimContext", "StreamLink", "StreamSession"]

logger = logging.getLogger("adapters.testing.nova_sonic_simulator")

INTERRUPTED_TEXT = '{ "interrupted" : true }'
MS_PER_CHAR = 60


class StreamLink(Protocol):
    """What the HTTP/2 layer offers one stream."""

    async def send_message(self, data: bytes) -> bool:
        """Write one message into the response body (flow-controlled); False if the stream is gone."""

    async def end_stream(self) -> None:
        """END_STREAM on the response."""

    def reset(self, error_code: int) -> None:
        """RST_STREAM now."""

    def goaway(self, error_code: int) -> None:
        """GOAWAY now, then close the connection."""

    def drop(self) -> None:
        """Close the TCP connection now, without GOAWAY (a network fault)."""

    def tcp_reset(self) -> None:
        """Reset the TCP connection now (RST, no GOAWAY)."""

    def silence(self) -> None:
        """Write nothing more on the connection (PING acks and WINDOW_UPDATEs included); keep it open."""

    def deafen(self) -> None:
        """Also stop reading the socket."""


@attrs.frozen(kw_only=True)
class SessionOptions:
    stream_lifetime_s: float
    silence_timeout_s: float
    speedup: float | None
    audio_chunk_ms: int


@attrs.define
class SimContext:
    """What every stream of one simulator shares: the scenario, the options and the records."""

    state: ScenarioState
    options: SessionOptions
    user_inputs: list[tuple[Any, ...]]
    schema_failures: list[SchemaFailure]
    signature_failures: list[SignatureFailure]
    notify: Callable[[], None]


@attrs.frozen
class _Command:
    kind: str  # "turn" | "fail" | "prompt_end" | "end" | "server_end" | "stop"
    turn: TurnInput | None = None
    exception: ServiceException | None = None


def _chunk_bytes(payload: bytes) -> bytes | None:
    """The event JSON inside a ``chunk`` payload ``{"bytes": "<base64>"}``; None if it is not one."""
    try:
        wrapper = json.loads(payload)
        if isinstance(wrapper, dict) and set(wrapper) == {"bytes"} and isinstance(wrapper["bytes"], str):
            return base64.b64decode(wrapper["bytes"], validate=True)
    except (ValueError, binascii.Error):
        pass
    return None


def _new_id() -> str:
    return str(uuid.uuid4())


class StreamSession:
    """One accepted stream: the inbound checks and the model's replies."""

    def __init__(
        self,
        link: StreamLink,
        ctx: SimContext,
        record: StreamRecord,
        chain: ChunkChain,
        faults: Sequence[Fault],
    ) -> None:
        self.link = link
        self.ctx = ctx
        self.record = record
        self.chain = chain
        self.faults = [f for f in faults if not f.is_exception or f.after_events is not None]
        self.order = InputOrder()
        self.decoder = MessageDecoder()
        self.session_id = _new_id()
        self.completion_id = _new_id()
        self.vad = EnergyVAD(ENDPOINTING_SILENCE_MS["MEDIUM"])
        self._queue: deque[_Command] = deque()
        self._wake = anyio.Event()
        self._interrupt = anyio.Event()
        self._abort = False
        self._finished = False  # no more input is looked at
        self._speaking = False
        self._barge_in = False
        self._completion_started = False
        self._awaiting_tools: dict[str, str] = {}
        self._tool_results: list[ToolResult] = []
        self._messages = 0
        self._events = 0
        self._last_input = anyio.current_time()
        self._input_ms = 0.0
        self._usage_total = {
            "input": {"speechTokens": 0, "textTokens": 0},
            "output": {"speechTokens": 0, "textTokens": 0},
        }

    # ------------------------------------------------------------------ inbound (called by the HTTP/2 reader)

    def on_data(self, data: bytes) -> None:
        if self._finished:
            return
        try:
            for message in self.decoder.feed(data):
                self._on_message(message)
                if self.done:  # a failure stops the reading: later messages are not looked at
                    return
        except MessageFormatError as exc:
            self._refuse(None, f"Malformed event-stream message: {exc}")

    @property
    def done(self) -> bool:
        """No more input is looked at: the stream failed, ended or was reset."""
        return self._finished

    def on_end_stream(self) -> None:
        if self._finished:
            return
        if self.decoder.pending:
            self._refuse(None, "The request stream ended inside an event-stream message.")
            return
        try:
            self.order.end_stream()
        except OrderError as exc:
            self._refuse(None, str(exc))
            return
        self._finished = True
        self._push(_Command("end"))

    def on_reset(self, why: str) -> None:
        """The stream is gone (client RST_STREAM, connection lost, simulator shutting down)."""
        if self.record.ended_by is None:
            self.record.ended_by = why
        self._finished = True
        self._push(_Command("stop"), urgent=True)
        self.ctx.notify()

    def _on_message(self, message: Message) -> None:
        self._messages += 1
        names = set(message.headers)
        date = message.headers.get(":date")
        signature = message.headers.get(":chunk-signature")
        if (
            names != {":date", ":chunk-signature"}
            or date is None
            or date.type != HeaderType.TIMESTAMP
            or signature is None
            or signature.type != HeaderType.BYTES
            or len(signature.value) != 32
        ):
            self._signature_failure("the outer message must carry exactly :date (timestamp) and :chunk-signature")
            return
        if not self.chain.verify(int(date.value), bytes(signature.value), message.payload):
            self._signature_failure("the chunk signature does not match the expected signature chain")
            return
        self.record.signatures_verified = self.chain.verified
        if not message.payload:
            try:
                self.order.end_marker()
            except OrderError as exc:
                self._refuse({"end_marker": True}, str(exc))
            return
        try:
            inner = decode_message(message.payload)
        except MessageFormatError as exc:
            self._refuse(None, f"Malformed inner event message: {exc}")
            return
        expected = {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"}
        actual = {name: inner.string(name) for name in inner.headers}
        if actual != expected:
            self._refuse(None, f"The inner message headers must be {expected}, got {sorted(inner.headers)}.")
            return
        event_bytes = _chunk_bytes(inner.payload)
        if event_bytes is None:
            self._refuse(None, 'The chunk payload must be {"bytes": "<base64 event JSON>"}.')
            return
        self._on_event(event_bytes)

    def _on_event(self, event_bytes: bytes) -> None:
        raw: Any
        try:
            raw = json.loads(event_bytes)
        except ValueError:
            raw = event_bytes.decode("utf-8", "replace")
        self.record.events.append(raw if isinstance(raw, dict) else {"invalid": raw})
        self._events += 1
        try:
            name, event, _ = parse_event(event_bytes)
            accepted = self.order.accept(name, event)
        except (SchemaError, OrderError) as exc:
            self._refuse(raw, str(exc))
            return
        self._apply(accepted)
        self.ctx.notify()
        for fault in self.faults:
            if fault.after_events == self._events:
                self._fire(fault)

    def _apply(self, accepted: Accepted) -> None:
        kind = accepted.kind
        inputs = self.ctx.user_inputs
        if kind == "session_start":
            config = accepted.event.turnDetectionConfiguration
            if config is not None:
                if self.record.model_id == "amazon.nova-sonic-v1:0":
                    self._refuse(None, "turnDetectionConfiguration is not supported by amazon.nova-sonic-v1:0.")
                    return
                self.vad = EnergyVAD(ENDPOINTING_SILENCE_MS[config.endpointingSensitivity])
        elif kind == "system":
            self.record.system_prompt = accepted.text
        elif kind == "history":
            inputs.append(("history", accepted.role, accepted.text))
        elif kind == "text_part":
            self._last_input = anyio.current_time()
        elif kind == "text":
            inputs.append(("text", accepted.text))
            self._push(_Command("turn", TurnInput(text=accepted.text)))
        elif kind == "audio":
            self._last_input = anyio.current_time()
            inputs.append(("audio", accepted.pcm))
            self._input_ms += pcm_ms(accepted.pcm)
            for boundary in self.vad.feed(accepted.pcm):
                if boundary.kind == "started" and self._speaking:
                    self._barge_in = True
                    self._interrupt.set()
                elif boundary.kind == "stopped":
                    turn = self.ctx.state.next_spoken_turn()
                    text = self.ctx.state.scenario.transcript(turn)
                    self._push(_Command("turn", TurnInput(text=text, spoken_turn=turn)))
        elif kind == "tool_result":
            inputs.append(("tool_result", accepted.tool_use_id, accepted.text))
            name = self._awaiting_tools.pop(accepted.tool_use_id)
            self._tool_results.append(ToolResult(accepted.tool_use_id, name, accepted.text))
            if not self._awaiting_tools:
                results, self._tool_results = tuple(self._tool_results), []
                self._push(_Command("turn", TurnInput(tool_results=results)))
        elif kind == "prompt_end":
            self._push(_Command("prompt_end"), urgent=True)

    def _fire(self, fault: Fault) -> None:
        logger.info("stream %d: injecting %s", self.record.index, fault.kind)
        kind = fault.kind
        if kind == "rst":
            self.record.ended_by = "rst"
            self.link.reset(fault.error_code)
            self.on_reset("rst")
        elif kind == "goaway":
            self.record.ended_by = "goaway"
            self.link.goaway(fault.error_code)
            self.on_reset("goaway")
        elif kind in ("reset", "drop"):
            self.record.ended_by = "reset" if kind == "reset" else "dropped"
            if kind == "reset":
                self.link.tcp_reset()
            else:
                self.link.drop()
            self.on_reset(self.record.ended_by)
        elif kind == "end_stream":
            if not self._finished:
                self._finished = True
                self._push(_Command("server_end"), urgent=True)
        elif kind == "silence":
            self.link.silence()
        elif kind == "deaf":
            self.link.deafen()
        else:
            self._fail(fault.exception())

    def inject(self, fault: Fault) -> None:
        """Play ``fault`` now (its triggers are ignored), unless the stream is over."""
        if not self._finished:
            self._fire(fault)

    def fire_immediate_faults(self) -> None:
        """Transport faults without ``after_events`` fire as soon as the request is accepted."""
        for fault in self.faults:
            if fault.after_events is None:
                self._fire(fault)
                return

    def _refuse(self, event: Any, detail: str) -> None:
        logger.info("stream %d: refused input: %s", self.record.index, detail)
        self.ctx.schema_failures.append(SchemaFailure(self.record.index, event, detail))
        self._fail(ServiceException.validation(detail))

    def _signature_failure(self, detail: str) -> None:
        logger.info("stream %d: chunk %d: %s", self.record.index, self._messages, detail)
        self.ctx.signature_failures.append(SignatureFailure(self.record.index, self._messages, detail))
        self._fail(ServiceException.bad_signature(detail))

    def _fail(self, exception: ServiceException) -> None:
        if self._finished:
            return
        self._finished = True
        self._push(_Command("fail", exception=exception), urgent=True)
        self.ctx.notify()

    def _push(self, command: _Command, *, urgent: bool = False) -> None:
        if urgent:
            self._abort = True
            self._interrupt.set()
            self._queue.appendleft(command)
        else:
            self._queue.append(command)
        self._wake.set()

    # ------------------------------------------------------------------ the model (its own task)

    async def run(self) -> None:
        """Play the model until the stream ends; the only writer of the response body."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._lifetime_timer)
            tg.start_soon(self._silence_timer)
            try:
                await self._model_loop()
            finally:
                tg.cancel_scope.cancel()

    async def _lifetime_timer(self) -> None:
        await anyio.sleep(self.ctx.options.stream_lifetime_s)
        self._fail(ServiceException.stream_limit(self.ctx.options.stream_lifetime_s))

    async def _silence_timer(self) -> None:
        timeout = self.ctx.options.silence_timeout_s
        while True:
            remaining = self._last_input + timeout - anyio.current_time()
            if remaining <= 0:
                self._fail(ServiceException.silence_timeout(timeout))
                return
            await anyio.sleep(remaining)

    async def _next(self) -> _Command:
        while not self._queue:
            await self._wake.wait()
            self._wake = anyio.Event()
        return self._queue.popleft()

    async def _model_loop(self) -> None:
        while True:
            command = await self._next()
            self._abort = False
            self._interrupt = anyio.Event()
            if command.kind == "stop":
                return
            if command.kind == "fail":
                assert command.exception is not None
                await self._send_exception(command.exception)
                return
            if command.kind == "end":
                await self.link.end_stream()
                self.record.ended_by = "client"
                self.ctx.notify()
                return
            if command.kind == "server_end":
                self.record.ended_by = "end_stream"
                await self.link.end_stream()
                self.ctx.notify()
                return
            if command.kind == "prompt_end":
                self._queue = deque(c for c in self._queue if c.kind != "turn")
                if self._completion_started:
                    await self._send("completionEnd", {"stopReason": "END_TURN"})
                continue
            assert command.turn is not None
            await self._respond(command.turn)

    async def _send_exception(self, exception: ServiceException) -> None:
        headers = string_headers(
            message_type="exception", exception_type=exception.exception_type, content_type="application/json"
        )
        payload = json.dumps({"message": exception.message}).encode()
        self.record.sent.append({"exception": exception.exception_type, "message": exception.message})
        self.record.exception = {"type": exception.exception_type, "message": exception.message}
        self.record.ended_by = self.record.ended_by or "exception"
        self.ctx.notify()
        if await self.link.send_message(encode_message(headers, payload)):
            await self.link.end_stream()

    async def _send(self, name: str, body: dict[str, Any]) -> bool:
        """One output event; False when the reply must stop (abort requested, or the stream is gone)."""
        if self._abort:
            return False
        full = {"sessionId": self.session_id, "promptName": self.order.prompt_name, "completionId": self.completion_id}
        full.update(body)
        event = {"event": {name: full}}
        problem = check_output_event(event)
        if problem is not None:
            raise SimulatorBug(f"the simulator was about to send an invalid {name}: {problem}")
        payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()}).encode()
        headers = string_headers(event_type="chunk", content_type="application/json", message_type="event")
        if not await self.link.send_message(encode_message(headers, payload)):
            self._abort = True
            return False
        self.record.sent.append(event)
        self.ctx.notify()
        return True

    async def _respond(self, turn: TurnInput) -> None:
        if not self._completion_started:
            self._completion_started = True
            if not await self._send("completionStart", {}):
                return
        if turn.spoken_turn is not None and not await self._text_content("USER", "FINAL", turn.text, "END_TURN"):
            return
        reply = self.ctx.state.choose(turn)
        for data in reply.raw:
            if not await self.link.send_message(data):
                return
        if reply.drop:
            self.link.drop()
            return
        if reply.fault is not None and reply.after_chunks is None:
            self._fire(reply.fault)
            return
        say, tools = spoken_words(reply, turn, self.order.declared_tools)
        output_ms = 0
        if say:
            output_ms = reply.audio_ms if reply.audio_ms is not None else max(200, MS_PER_CHAR * len(say))
            if not await self._speak(say, output_ms, reply):
                return
        for tool in tools:
            tool_use_id = tool.call_id or _new_id()
            self.order.tool_issued(tool_use_id, tool.name)
            self._awaiting_tools[tool_use_id] = tool.name
            content_id = _new_id()
            ok = (
                await self._send(
                    "contentStart",
                    {
                        "contentId": content_id,
                        "type": "TOOL",
                        "role": "TOOL",
                        "toolUseOutputConfiguration": {"mediaType": "application/json"},
                    },
                )
                and await self._send(
                    "toolUse",
                    {
                        "contentId": content_id,
                        "toolName": tool.name,
                        "toolUseId": tool_use_id,
                        "content": json.dumps(dict(tool.arguments)),
                    },
                )
                and await self._send("contentEnd", {"contentId": content_id, "type": "TOOL", "stopReason": "TOOL_USE"})
            )
            if not ok:
                return
        await self._usage(turn, say, output_ms)

    async def _text_content(self, role: str, stage: str, text: str, stop_reason: str) -> bool:
        content_id = _new_id()
        return (
            await self._send(
                "contentStart",
                {
                    "contentId": content_id,
                    "type": "TEXT",
                    "role": role,
                    "additionalModelFields": json.dumps({"generationStage": stage}),
                    "textOutputConfiguration": {"mediaType": "text/plain"},
                },
            )
            and await self._send("textOutput", {"contentId": content_id, "role": role, "content": text})
            and await self._send("contentEnd", {"contentId": content_id, "type": "TEXT", "stopReason": stop_reason})
        )

    async def _speak(self, say: str, audio_ms: int, reply: Reply) -> bool:
        if not await self._text_content("ASSISTANT", "SPECULATIVE", say, "PARTIAL_TURN"):
            return False
        voice = self.order.prompt_start.audioOutputConfiguration.voiceId if self.order.prompt_start else "matthew"
        content_id = _new_id()
        if not await self._send(
            "contentStart",
            {
                "contentId": content_id,
                "type": "AUDIO",
                "role": "ASSISTANT",
                "audioOutputConfiguration": {
                    "mediaType": "audio/lpcm",
                    "sampleRateHertz": OUTPUT_RATE,
                    "sampleSizeBits": 16,
                    "channelCount": 1,
                    "encoding": "base64",
                    "audioType": "SPEECH",
                    "voiceId": voice,
                },
            },
        ):
            return False
        self._barge_in = False
        self._speaking = True
        try:
            chunk_ms = self.ctx.options.audio_chunk_ms
            sent_ms = 0
            chunks = 0
            while sent_ms < audio_ms and not self._barge_in:
                size = min(chunk_ms, audio_ms - sent_ms)
                pcm = tone(size)
                if not await self._send(
                    "audioOutput", {"contentId": content_id, "content": base64.b64encode(pcm).decode()}
                ):
                    return False
                sent_ms += size
                chunks += 1
                if reply.fault is not None and chunks == reply.after_chunks:
                    self._fire(reply.fault)  # in the middle of the answer
                    return False
                await self._pace(size)
        finally:
            self._speaking = False
        interrupted = self._barge_in
        stop = "INTERRUPTED" if interrupted else "END_TURN"
        if not await self._send("contentEnd", {"contentId": content_id, "type": "AUDIO", "stopReason": stop}):
            return False
        return await self._text_content("ASSISTANT", "FINAL", INTERRUPTED_TEXT if interrupted else say, stop)

    async def _pace(self, ms: int) -> None:
        speedup = self.ctx.options.speedup
        if speedup is None:
            await anyio.lowlevel.checkpoint()
            return
        with anyio.move_on_after(ms / 1000 / speedup):
            await self._interrupt.wait()

    async def _usage(self, turn: TurnInput, say: str, output_ms: int) -> None:
        delta = {
            "input": {"speechTokens": int(self._input_ms // 40), "textTokens": len(turn.text.split())},
            "output": {"speechTokens": output_ms // 40, "textTokens": len(say.split())},
        }
        self._input_ms = 0.0
        for side in ("input", "output"):
            for key in ("speechTokens", "textTokens"):
                self._usage_total[side][key] += delta[side][key]
        total_in = sum(self._usage_total["input"].values())
        total_out = sum(self._usage_total["output"].values())
        await self._send(
            "usageEvent",
            {
                "details": {"delta": delta, "total": json.loads(json.dumps(self._usage_total))},
                "totalInputTokens": total_in,
                "totalOutputTokens": total_out,
                "totalTokens": total_in + total_out,
            },
        )
