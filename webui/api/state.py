"""How a route reaches the Runtime: from the app it is mounted on, never a global."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from webui.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
