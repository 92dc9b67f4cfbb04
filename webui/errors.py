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


class AppError(Exception):
    """A failure the user can act on; the message is safe to show as it is."""

    status: int = 400
    code: str | None = None
    kind: str = "invalid_request_error"

    def __init__(self, message: str = "", *, param: str | None = None, code: str | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self)

    def blame(self, param: str) -> None:
        """Name `param` as the field at fault unless one is named already: the edge
        knows which request field a nameless error came from."""
        if self.param is None:
            self.param = param


class ServerError(AppError):
    """Our side failed or is unavailable; not the request's fault."""

    status = 500
    kind = "server_error"
