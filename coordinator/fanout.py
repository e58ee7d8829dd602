"""Calling several nodes at once and acting on their answers in arrival order.

``fan_out(sessions, asked, method, params, timeout, on_answer, reserve=..., hedge_s=...)``
calls ``method`` on every node of ``asked`` at once (``SessionManager.call``) and hands
each answer, as it arrives, to ``on_answer(node, result, error)``, which says what to
do next (``Verdict``): ``CONTINUE`` waiting, ``DONE`` (the calls still running are
cancelled: nobody waits for a slow node once the request is complete), or ``MORE``: the
nodes asked so far cannot complete the request, so the ``reserve`` nodes are called as
well (appended to ``asked``) — or, with no reserve left, it stops. The reserve is also
called once ``hedge_s`` has passed without ``DONE``. At ``timeout`` everything stops.

A call that fails (node down, timeout, an error answer, a result that fails the schema)
reaches ``on_answer`` as ``error``; nothing is raised for it here.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from coordinator.sessions import SessionError
from protocol.errors import DecodeError
from protocol.rpc import Method, RpcError

log = logging.getLogger("tkms.coordinator.fanout")

Answer = tuple[str, Any, BaseException | None]  # (node, result, error)


class Verdict(enum.Enum):
    """What a fan-out does after an answer."""

    CONTINUE = "continue"
    DONE = "done"
    MORE = "more"  # the request cannot complete with the nodes asked so far


class Caller(Protocol):
    """What ``fan_out`` needs of ``coordinator.sessions.SessionManager``."""

    async def call(
        self,
        node_name: str,
        method: Method,
        params: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - SessionManager.call's contract
    ) -> Any: ...


OnAnswer = Callable[[str, Any, BaseException | None], Awaitable[Verdict]]


async def _call(
    sessions: Caller,
    name: str,
    method: Method,
    params: dict[str, Any],
    timeout: float,  # noqa: ASYNC109 - handed to SessionManager.call
    answers: trio.MemorySendChannel[Answer],
) -> None:
    try:
        result = await sessions.call(name, method, params, timeout=timeout)
    except (SessionError, RpcError, DecodeError) as exc:
        answers.send_nowait((name, None, exc))
    else:
        answers.send_nowait((name, result, None))


async def fan_out(
    sessions: Caller,
    asked: list[str],
    method: Method,
    params: dict[str, Any],
    timeout: float,  # noqa: ASYNC109 - the fan-out's deadline
    on_answer: OnAnswer,
    *,
    reserve: Sequence[str] = (),
    hedge_s: float = math.inf,
) -> set[str]:
    """See the module header. Returns the nodes that gave no answer before the
    deadline (none if ``on_answer`` stopped it first)."""
    send, receive = trio.open_memory_channel[Answer](len(asked) + len(reserve) + 1)
    waiting = set(asked)
    spare = list(reserve)
    hedge_at = trio.current_time() + hedge_s
    async with trio.open_nursery() as nursery:

        def start(names: Sequence[str]) -> None:
            for name in names:
                nursery.start_soon(_call, sessions, name, method, params, timeout, send)

        def escalate(why: str) -> None:
            nonlocal spare
            log.info("asking %s as well (%s)", ", ".join(spare), why)
            asked.extend(spare)
            waiting.update(spare)
            start(spare)
            spare = []

        start(asked)
        with trio.move_on_after(timeout) as deadline:
            while waiting:
                answer: Answer | None = None
                with trio.move_on_at(hedge_at if spare else math.inf):
                    answer = await receive.receive()
                if answer is None:
                    escalate(f"no result within {hedge_s:.2f} s")
                    continue
                name, result, error = answer
                waiting.discard(name)
                verdict = await on_answer(name, result, error)
                if verdict is Verdict.DONE or (verdict is Verdict.MORE and not spare):
                    break
                if verdict is Verdict.MORE:
                    escalate("the others cannot complete it")
        nursery.cancel_scope.cancel()
    return waiting if deadline.cancelled_caught else set()
