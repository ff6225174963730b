"""The one auth driver: runs a scheme's flow against a sender, for the proxy and verify probes.

Modelled on httpx's ``_send_handling_auth``: the flow signs, the driver sends, the flow sees the
answer and may ask for one more send (a refreshed token after a 401). What the driver adds is
the bookkeeping every caller got wrong on its own: an answer that will not be returned is
released on *every* way out (the flow raising in ``asend``, say an OAuth2 refresh failing or in
back-off; cancellation while the flow waits for a token lock), so no pooled connection leaks;
and the flow is always closed, so its ``finally`` blocks run now, not at garbage collection.

Bounded like aiohttp's digest middleware: one send and at most one retry (``range(2)``). A flow
that yields a third request is not obeyed; the second answer is returned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sidecar.schemes.base import AuthFlow, OutboundRequest, ResponseHead

R = TypeVar("R", bound=ResponseHead)

SENDS = 2  # one send and at most one retry


async def drive(
    flow: AuthFlow,
    send: Callable[[OutboundRequest], Awaitable[R]],
    release: Callable[[R], object],
) -> R:
    """The answer to return, unreleased; every other answer has been released."""
    answer: R | None = None
    try:
        request = await flow.__anext__()
        for _ in range(SENDS):
            if answer is not None:  # the flow asked for a retry: its first answer is done with
                release(answer)
                answer = None
            answer = await send(request)
            try:
                request = await flow.asend(answer)
            except StopAsyncIteration:
                break
        await flow.aclose()  # here too, so that a flow failing to close releases the answer
        assert answer is not None
        return answer
    except BaseException:
        if answer is not None:
            release(answer)
        raise
    finally:
        await flow.aclose()  # a no-op when closed above
