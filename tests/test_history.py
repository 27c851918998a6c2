"""Seeding a conversation with ``messages=`` (bidi_core/history.py): every
form accepted, the error for each form refused, and what the first
connection is seeded with."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from adapters.testing import End, Expect, ScriptedModel, Step
from bidi_core import BidiAgent, BidiConnectionError, BidiConnectionStartEvent, BidiTextInputEvent, BidiUsageError
from bidi_core.history import coerce_messages
from ports.messages import Message, TextMessage, ToolCallMessage, ToolResultMessage
from tests.support import response, transcript

OBJECTS: list[Message] = [
    TextMessage("user", "What's the weather in Paris?"),
    ToolCallMessage("t1", "get_weather", {"location": "Paris"}),
    ToolResultMessage("t1", "get_weather", "success", {"sky": "clear", "celsius": 21}),
    TextMessage("assistant", "Clear and 21 degrees."),
    ToolResultMessage("t2", "get_news", "error", "no network"),
]

DICTS: list[dict[str, Any]] = [
    {"role": "user", "content": [{"text": "What's the weather in Paris?"}]},
    {
        "role": "assistant",
        "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"location": "Paris"}}}],
    },
    {
        "role": "user",
        "content": [
            {
                "toolResult": {
                    "toolUseId": "t1",
                    "name": "get_weather",
                    "status": "success",
                    "content": [{"json": {"sky": "clear", "celsius": 21}}],
                }
            }
        ],
    },
    {"role": "assistant", "content": [{"text": "Clear and 21 degrees."}]},
    {
        "role": "user",
        "content": [
            {
                "toolResult": {
                    "toolUseId": "t2",
                    "name": "get_news",
                    "status": "error",
                    "content": [{"text": "no network"}],
                }
            }
        ],
    },
]


# ---------------------------------------------------------------- accepted forms


def test_no_messages_is_an_empty_history() -> None:
    assert coerce_messages(None) == []
    assert coerce_messages([]) == []
    assert BidiAgent(model=ScriptedModel([])).messages == []


def test_message_objects_are_kept_as_they_are_in_order() -> None:
    got = coerce_messages(OBJECTS)
    assert got == OBJECTS
    assert all(a is b for a, b in zip(got, OBJECTS, strict=True))


def test_converse_dicts_become_message_objects() -> None:
    assert coerce_messages(DICTS) == OBJECTS


def test_each_message_is_its_own_dict_form_read_back() -> None:
    assert coerce_messages([m.to_dict() for m in OBJECTS]) == OBJECTS


def test_objects_and_dicts_mix_and_any_iterable_will_do() -> None:
    mixed = [OBJECTS[0], DICTS[1], OBJECTS[2], DICTS[3]]

    def generate() -> Iterator[Message | dict[str, Any]]:
        yield from mixed

    assert coerce_messages(mixed) == OBJECTS[:4]
    assert coerce_messages(tuple(mixed)) == OBJECTS[:4]
    assert coerce_messages(generate()) == OBJECTS[:4]


def test_a_tool_call_without_input_and_a_result_without_content_or_status() -> None:
    bare = [
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "ping"}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1"}}]},
    ]
    assert coerce_messages(bare) == [ToolCallMessage("t1", "ping", {}), ToolResultMessage("t1", "", "success", None)]


def test_the_agent_keeps_its_own_list_and_never_changes_the_callers() -> None:
    seeds = list(OBJECTS)
    agent = BidiAgent(model=ScriptedModel([]), messages=seeds)
    assert agent.messages == OBJECTS
    assert agent.messages is not seeds
    agent.messages.append(TextMessage("user", "more"))
    assert seeds == OBJECTS


# ---------------------------------------------------------------- refused forms


@pytest.mark.parametrize(
    "messages",
    ["hello", b"hello", {"role": "user", "content": [{"text": "hi"}]}, TextMessage("user", "hi")],
    ids=["str", "bytes", "one-dict", "one-message"],
)
def test_a_single_value_instead_of_a_list_is_refused(messages: Any) -> None:
    with pytest.raises(BidiUsageError, match="messages must be a list of messages"):
        BidiAgent(model=ScriptedModel([]), messages=messages)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (42, r"messages\[1\] is a int, expected a message or a dict"),
        ("hello", r"messages\[1\] is a str, expected a message or a dict"),
        (None, r"messages\[1\] is a NoneType, expected a message or a dict"),
        ({"content": [{"text": "hi"}]}, r"messages\[1\]: a message needs 'role' and exactly one 'content' block"),
        ({"role": "user"}, r"messages\[1\]: a message needs 'role' and exactly one 'content' block"),
        ({"role": "user", "content": []}, r"messages\[1\]: a message needs 'role' and exactly one 'content' block"),
        (
            {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
            r"messages\[1\]: a message needs 'role' and exactly one 'content' block",
        ),
        ({"role": "system", "content": [{"text": "be brief"}]}, r"messages\[1\]: unsupported message"),
        ({"role": "user", "content": [{"image": {"format": "png"}}]}, r"messages\[1\]: unsupported message"),
        ({"role": "user", "content": [{"toolUse": {"toolUseId": "t", "name": "f"}}]}, r"messages\[1\]: unsupported"),
        (
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "status": "maybe"}}]},
            r"messages\[1\]: unknown tool result status 'maybe'",
        ),
        ({"role": "user", "content": ["text"]}, r"messages\[1\]: .*content block"),
        ({"role": "assistant", "content": [{"toolUse": {"name": "f"}}]}, r"messages\[1\]: .*toolUseId"),
        ({"role": "user", "content": [{"toolResult": {"status": "success"}}]}, r"messages\[1\]: .*toolUseId"),
        ({"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": ["x"]}}]}, r"messages\[1\]: "),
    ],
    ids=[
        "number",
        "str-entry",
        "none-entry",
        "no-role",
        "no-content",
        "no-block",
        "two-blocks",
        "system-role",
        "image",
        "tool-use-from-user",
        "bad-status",
        "block-not-a-dict",
        "tool-use-without-id",
        "tool-result-without-id",
        "result-content-not-a-dict",
    ],
)
def test_a_bad_entry_is_refused_naming_it(entry: Any, problem: str) -> None:
    with pytest.raises(BidiUsageError, match=problem):
        BidiAgent(model=ScriptedModel([]), messages=[OBJECTS[0], entry])


# ---------------------------------------------------------------- what the connections are seeded with


async def test_the_first_connection_is_seeded_with_the_messages_and_the_next_with_what_followed() -> None:
    model = ScriptedModel(
        [
            [
                Step(expect=Expect(BidiTextInputEvent, text="And tomorrow?"), emit=response("r1", transcript("Rain."))),
                Step(end=End(BidiConnectionError("connection reset"))),
            ],
            [],
        ]
    )
    agent = BidiAgent(model=model, messages=DICTS)
    starts = 0
    async with agent:
        await agent.send("And tomorrow?")
        with anyio.fail_after(10):
            async for event in agent.receive():
                starts += isinstance(event, BidiConnectionStartEvent)
                if starts == 2:
                    break
    conversation = [TextMessage("user", "And tomorrow?"), TextMessage("assistant", "Rain.")]
    assert model.requests[0].history == tuple(OBJECTS)
    assert model.requests[1].history == (*OBJECTS, *conversation)
    assert agent.messages == [*OBJECTS, *conversation]
    model.assert_done()
