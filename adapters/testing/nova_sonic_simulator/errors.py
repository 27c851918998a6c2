"""The service's modeled exceptions: event-stream messages, or HTTP errors (docs/protocols/nova_sonic.md#exceptions).

Inside a stream an exception is a message with ``:message-type: exception``, an
``:exception-type`` in camelCase and a payload ``{"message": ...}`` (verified:
the official SDK raised ``ValidationException`` for one). Before the stream
starts, the same error is an HTTP response with ``x-amzn-errortype`` and
``x-amzn-requestid`` headers and a JSON body, with the status botocore's model
gives the shape. Message texts marked *inference* are ours: nothing public
records the service's wording for them.
"""

from __future__ import annotations

import attrs

__all__ = ["EXCEPTION_STATUS", "ServiceException", "SimulatorBug"]

EXCEPTION_STATUS = {
    "validationException": 400,
    "accessDeniedException": 403,
    "resourceNotFoundException": 404,
    "modelTimeoutException": 408,
    "throttlingException": 429,
    "modelNotReadyException": 429,
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "serviceUnavailableException": 503,
    "serviceQuotaExceededException": 400,
}
"""HTTP status per error shape (botocore ``bedrock-runtime/2023-09-30/service-2.json``)."""


class SimulatorBug(AssertionError):
    """The simulator was about to do something the protocol forbids: fail the test that uses it."""


@attrs.frozen
class ServiceException:
    """One modeled exception: ``exception_type`` as on the wire (``validationException``) and its message."""

    exception_type: str
    message: str

    @property
    def error_type(self) -> str:
        """The HTTP ``x-amzn-errortype`` spelling: ``ValidationException``."""
        return self.exception_type[:1].upper() + self.exception_type[1:]

    @property
    def status(self) -> int:
        return EXCEPTION_STATUS.get(self.exception_type, 400)

    # ------------------------------------------------------------------ canned exceptions

    @classmethod
    def validation(cls, message: str) -> ServiceException:
        return cls("validationException", message)

    @classmethod
    def throttling(cls) -> ServiceException:
        """The Bedrock throttling text (seen in botocore retries of InvokeModel)."""
        return cls("throttlingException", "Too many requests, please wait before trying again.")

    @classmethod
    def model_timeout(cls) -> ServiceException:
        """AWS "Handling errors" page for speech (docs/protocols/nova_sonic.md#limits)."""
        return cls("modelTimeoutException", "Model has timed out in processing the request. Try your request again.")

    @classmethod
    def internal(cls) -> ServiceException:
        return cls("internalServerException", "The server encountered an internal error.")

    @classmethod
    def unavailable(cls) -> ServiceException:
        return cls("serviceUnavailableException", "Service is temporarily unavailable. Try again later.")

    @classmethod
    def model_stream_error(cls) -> ServiceException:
        return cls("modelStreamErrorException", "The model stream failed while processing the request.")

    @classmethod
    def access_denied(cls) -> ServiceException:
        """HTTP 403: the credentials are valid but may not invoke the model (Bedrock's text for a model
        the account was not granted access to)."""
        return cls("accessDeniedException", "You don't have access to the model with the specified model ID.")

    @classmethod
    def silence_timeout(cls, seconds: float) -> ServiceException:
        """No input for about 175 s. Only "InternalErrorCode=531" is attested (strands); the rest is inference."""
        return cls(
            "validationException",
            f"Timed out waiting for input events: no audio or text input for {seconds:g} seconds. "
            "InternalErrorCode=531",
        )

    @classmethod
    def stream_limit(cls, seconds: float) -> ServiceException:
        """The stream's lifetime (8 minutes, botocore's model says) ran out: users report a
        ``ModelTimeoutException`` with the usual text about 8 minutes into a stream
        (docs/protocols/nova_sonic.md#limits), so that is what the simulator sends."""
        return cls.model_timeout()

    @classmethod
    def bad_signature(cls, detail: str) -> ServiceException:
        """A chunk signature that does not verify. The shape (validationException) and text are inference."""
        return cls("validationException", f"Invalid event signature: {detail}")
