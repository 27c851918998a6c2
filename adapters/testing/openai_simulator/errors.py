"""The service's error payloads, in one place.

Every ``error`` event the simulator sends is built from a :class:`ServiceError`.
The texts and codes are the ones the real service is seen sending (docs/protocols/openai.md
and public bug reports quoted in the docstrings); where no
capture exists the docstring says the text is our inference, so a test never
leans on an invented string by accident.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["ServiceError", "SimulatorBug"]


class SimulatorBug(AssertionError):
    """The simulator was about to send something the server oracle rejects.

    Raised (when the simulator is ``strict``) so that the test using it fails
    loudly: a simulator that speaks a wrong dialect would make client tests lie.
    """


@attrs.frozen
class ServiceError:
    """The ``error`` object of the service's ``error`` event (``openai.types.realtime.RealtimeError``).

    ``type`` is ``invalid_request_error`` for client mistakes and ``server_error``
    for the service's own failures.
    """

    message: str
    code: str | None = None
    type: str = "invalid_request_error"
    param: str | None = None

    def to_event_error(self, client_event_id: str | None) -> dict[str, Any]:
        """The wire form; ``event_id`` names the client event that caused it (or null)."""
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": client_event_id,
        }

    def to_http_body(self) -> dict[str, Any]:
        """The REST error body, as the service answers a refused handshake."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    # ------------------------------------------------------------------ canned errors

    @classmethod
    def invalid_api_key(cls, presented: str) -> ServiceError:
        """HTTP 401 for a wrong key; the service shows a masked key."""
        return cls(
            message=f"Incorrect API key provided: {mask_key(presented)}. "
            "You can find your API key at https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    @classmethod
    def missing_api_key(cls) -> ServiceError:
        """HTTP 401 without an ``Authorization`` header; the service sends ``code: null`` here."""
        return cls(
            message="You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
            "username) if you're accessing the API from your browser and are prompted for a username and password. "
            "You can obtain an API key from https://platform.openai.com/account/api-keys.",
            code=None,
        )

    @classmethod
    def not_found(cls, method: str, path: str) -> ServiceError:
        """HTTP 404 for an unknown route (the REST API's wording)."""
        return cls(message=f"Invalid URL ({method} {path})", code=None)

    @classmethod
    def beta_disabled(cls) -> ServiceError:
        """``OpenAI-Beta: realtime=v1``: an in-band refusal, then close 4000 (docs/protocols/openai.md#retired-beta)."""
        return cls(
            message="The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
            code="beta_api_shape_disabled",
        )

    @classmethod
    def session_expired(cls, minutes: int) -> ServiceError:
        """The session-length limit (docs/protocols/openai.md#session-limits; beta text, GA text unknown)."""
        return cls(message=f"Your session hit the maximum duration of {minutes} minutes.", code="session_expired")

    @classmethod
    def active_response(cls, response_id: str) -> ServiceError:
        """``response.create`` while a response is in progress (seen in openai-agents-python#1466)."""
        return cls(
            message=f"Conversation already has an active response in progress: {response_id}. "
            "Wait until the response is finished before creating a new one.",
            code="conversation_already_has_active_response",
        )

    @classmethod
    def cancel_not_active(cls) -> ServiceError:
        """``response.cancel`` with nothing to cancel."""
        return cls(message="Cancellation failed: no active response found", code="response_cancel_not_active")

    @classmethod
    def truncate_too_long(cls, audio_ms: int, audio_end_ms: int) -> ServiceError:
        """``audio_end_ms`` past the item's audio (text seen in twilio-samples #45; the code is our inference)."""
        return cls(
            message=f"Audio content of {audio_ms}ms is already shorter than {audio_end_ms}ms",
            code="invalid_value",
            param="audio_end_ms",
        )

    @classmethod
    def truncate_not_audio(cls) -> ServiceError:
        """Truncating anything but an assistant audio part (livekit/agents#6158)."""
        return cls(message="Only model output audio messages can be truncated", code="unsupported_content_type")

    @classmethod
    def item_not_found(cls, item_id: str, param: str) -> ServiceError:
        """An unknown item id (text and code are our inference)."""
        return cls(message=f"Item with item_id '{item_id}' not found.", code="invalid_value", param=param)

    @classmethod
    def commit_empty(cls, buffered_ms: float) -> ServiceError:
        """``input_audio_buffer.commit`` with less than 100 ms buffered."""
        return cls(
            message="Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
            f"but buffer only has {buffered_ms:.2f}ms of audio.",
            code="input_audio_buffer_commit_empty",
        )

    @classmethod
    def invalid_json(cls) -> ServiceError:
        """A frame that is not a JSON object (text and code are our inference)."""
        return cls(
            message="We could not parse the JSON body of your request. Each event must be a JSON object.",
            code="invalid_json",
        )


def mask_key(key: str) -> str:
    """``sk-abc...wxyz`` the way the service shows keys: never the whole secret."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * 12}{key[-4:]}"
