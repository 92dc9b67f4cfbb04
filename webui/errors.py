"""The one base class for errors whose message is written for the user.

Each error carries what every surface needs to show it: an HTTP `status`, a stable
machine-readable `code`, OpenAI's error `kind` (its "type" field) and the request
field it blames (`param`).  The error travels as this object from where it is raised
(a validator, the engine, a loader) to the edge, and is turned into a message exactly
once there: `webui/ui/guard.py` for the browser, `webui/api/errors.py` for the API.
Nobody recovers a field name by splitting the message text.

Subclasses also inherit the builtin they always were (ValueError, RuntimeError), so
code that catches those keeps working.
"""

from __future__ import annotations

import copy


class AppError(Exception):
    """A failure the user can act on; the message is safe to show as it is."""

    status: int = 400
    code: str | None = None
    kind: str = "invalid_request_error"

    def __init__(self, message: str = "", *, param: str | None = None, code: str | None = None,
                 status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.param = param
        # What is wrong, without the field's name: for an edge that names the field as
        # its caller spelled it (Ollama's options.num_predict for our max_new_tokens).
        self.reason = message if reason is None else reason
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self)

    @property
    def named_message(self) -> str:
        """The message with the field it blames in front, for the error shapes that have
        no field of their own for it (Ollama's, Anthropic's)."""
        if self.param is None or self.message.startswith(self.param):
            return self.message
        return f"{self.param}: {self.message}"

    def as_field(self, param: str) -> AppError:
        """This error blaming `param` instead, named as the caller spelled the field (the
        engine says json_schema where the request sent response_format): a copy."""
        other = copy.copy(self)
        other.args = (f"{param}: {self.reason}",)
        other.param = param
        return other

    def blame(self, param: str) -> None:
        """Name `param` as the field at fault unless one is named already: the edge
        knows which request field a nameless error came from."""
        if self.param is None:
            self.param = param


class ServerError(AppError):
    """Our side failed or is unavailable; not the request's fault."""

    status = 500
    kind = "server_error"
