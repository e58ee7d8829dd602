"""Moving a sans-IO ``protocol.rpc.Connection``'s bytes over a trio stream: the part the
node's listener (``node/transport.py``) and the coordinator's sessions
(``coordinator/sessions.py``) share.

``ConnectionWriter`` is the one writer of a connection's outgoing bytes. ``flush()``
sends what the connection has queued unless another task is sending already (that task
drains the queue before it stops, so bytes queued meanwhile go out with its next write).
The write is shielded from the caller's cancellation, so a timed-out caller never cuts
a frame in half, and each ``send_all`` is bounded by ``send_timeout_s``. A failed write
may leave half a frame on the stream, so after one the writer sends nothing more.
"""

from __future__ import annotations

import trio

from protocol.rpc import Connection

RECEIVE_BYTES = 256 * 1024  # several full frames per read


class ConnectionWriter:
    """Single writer of ``conn``'s outgoing bytes onto ``stream``."""

    __slots__ = ("_conn", "_send_timeout_s", "_sending", "_stream", "failed")

    def __init__(
        self, conn: Connection, stream: trio.abc.SendStream, *, send_timeout_s: float
    ) -> None:
        self._conn = conn
        self._stream = stream
        self._send_timeout_s = send_timeout_s
        self._sending = False
        self.failed: str | None = None  # why a write failed; then nothing more is sent

    async def flush(self) -> str | None:
        """Send what is queued; None, or why the write failed (now or earlier).

        Error handling: a timeout or a broken/closed stream is returned as a reason,
        for the caller to end the connection with; anything else propagates (a bug).
        """
        if self.failed is not None:
            return self.failed
        if self._sending:
            return None
        data = self._conn.data_to_send()
        if not data:
            return None
        self._sending = True
        try:
            with trio.CancelScope(shield=True):
                while data:
                    with trio.fail_after(self._send_timeout_s):
                        await self._stream.send_all(data)
                    data = self._conn.data_to_send()
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.failed = f"send failed: {exc or type(exc).__name__}"
            return self.failed
        finally:
            self._sending = False
        return None
