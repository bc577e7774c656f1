"""What the routes are given: the app's :class:`ServeState`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from emotion_llama.serve.state import ServeState


async def get_state(request: Request) -> ServeState:
    return request.app.state.serve


#: A route's parameter for the app's state.
State = Annotated[ServeState, Depends(get_state)]
