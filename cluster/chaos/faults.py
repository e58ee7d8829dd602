"""Carrying out the planner's faults on a local cluster: signals, restarts, proxies.

``Executor.start(fault)`` / ``Executor.lift(fault)`` do what a ``schedule.Fault``
says to the real processes (through ``cluster.launcher``: pid files, ``start_node``,
``start_coordinator``) and to the node's loopback proxy:

=========================  ==========================  ================================
kind                       start                       lift
=========================  ==========================  ================================
kill                       SIGKILL                     start the node again
stop                       SIGSTOP                     SIGCONT
partition                  proxy refuses / blackholes  proxy heals
delay                      proxy delays each chunk     proxy heals
restart                    SIGTERM (graceful)          wait for the exit (SIGKILL after
                                                       ``exit_grace_s``), start again
coordinator_restart        SIGTERM or SIGKILL          wait for the exit, start again
=========================  ==========================  ================================

Blocking launcher calls run in worker threads. What goes wrong (a process already
gone, a start that fails) is recorded in ``errors`` with its time, never raised:
the run goes on and the final checks show the consequence.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping

import trio

from cluster import launcher
from cluster.chaos.proxy import Proxy
from cluster.chaos.schedule import Fault, FaultKind

COORDINATOR = "coordinator"


class Executor:
    """Applies faults to the processes and proxies of one proxied local cluster."""

    def __init__(
        self,
        layout: launcher.ClusterLayout,
        proxies: Mapping[str, Proxy],
        *,
        exit_grace_s: float = 10.0,
    ) -> None:
        self.layout = layout
        self.proxies = dict(proxies)
        self.nodes = {n.name: n for n in layout.nodes}
        self.exit_grace_s = exit_grace_s
        self.errors: list[tuple[float, str]] = []

    def _error(self, message: str) -> None:
        self.errors.append((trio.current_time(), message))

    async def _pid(self, name: str) -> int | None:
        return await trio.to_thread.run_sync(launcher.read_pid, self.layout, name)

    async def _signal(self, name: str, sig: signal.Signals) -> None:
        pid = await self._pid(name)
        if pid is None:
            self._error(f"{sig.name} {name}: not running")
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            self._error(f"{sig.name} {name}: exited before the signal")

    async def _exited(self, name: str, within_s: float) -> bool:
        """Poll the pid file and /proc until ``name`` is gone (True) or time is up."""
        with trio.move_on_after(within_s):
            while True:
                if await self._pid(name) is None:
                    return True
                await trio.sleep(0.05)
        return False

    async def _wait_exit(self, name: str) -> None:
        """Wait for ``name`` to exit; SIGKILL it after ``exit_grace_s``."""
        if await self._exited(name, self.exit_grace_s):
            return
        pid = await self._pid(name)
        if pid is not None:
            self._error(f"{name} did not exit within {self.exit_grace_s:g} s of SIGTERM; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not await self._exited(name, 5.0):
                self._error(f"{name} survived SIGKILL for 5 s")

    async def _start(self, name: str) -> None:
        try:
            if name == COORDINATOR:
                await trio.to_thread.run_sync(launcher.start_coordinator, self.layout)
            else:
                await trio.to_thread.run_sync(launcher.start_node, self.layout, self.nodes[name])
        except OSError as exc:
            self._error(f"start {name}: {exc}")

    async def start(self, fault: Fault) -> None:
        name = fault.node or COORDINATOR
        kind = fault.kind
        if kind is FaultKind.KILL:
            await self._signal(name, signal.SIGKILL)
        elif kind is FaultKind.STOP:
            await self._signal(name, signal.SIGSTOP)
        elif kind is FaultKind.PARTITION:
            self.proxies[name].partition(blackhole=fault.blackhole)
        elif kind is FaultKind.DELAY:
            self.proxies[name].delay(fault.delay_s)
        elif kind is FaultKind.RESTART:
            await self._signal(name, signal.SIGTERM)
        elif kind is FaultKind.COORDINATOR_RESTART:
            await self._signal(name, signal.SIGKILL if fault.hard else signal.SIGTERM)

    async def lift(self, fault: Fault) -> None:
        name = fault.node or COORDINATOR
        kind = fault.kind
        if kind is FaultKind.KILL:
            await self._wait_exit(name)
            await self._start(name)
        elif kind is FaultKind.STOP:
            await self._signal(name, signal.SIGCONT)
        elif kind in (FaultKind.PARTITION, FaultKind.DELAY):
            self.proxies[name].heal()
        elif kind in (FaultKind.RESTART, FaultKind.COORDINATOR_RESTART):
            await self._wait_exit(name)
            await self._start(name)

    def heal_all(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    async def ensure_running(self) -> list[str]:
        """Continue every process and start any that is not running (the end of a
        run: whatever happened, the cluster is whole again). Returns those started."""
        self.heal_all()
        started = []
        for name in [*self.nodes, COORDINATOR]:
            pid = await self._pid(name)
            if pid is None:
                await self._start(name)
                started.append(name)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        return started
