"""One chaos run, start to end (``run_chaos``), in this process's trio loop.

1. A proxied local cluster: fresh in a temporary dir (``launcher.init_cluster(...,
   proxied=True)``), or an existing proxied one from ``cluster_dir``. One loopback
   proxy per node runs in this process for the whole run; the cluster starts.
2. A DKG (``POST /v1/dkg``, demo client) makes the key the load signs with.
3. For ``duration_s``: the signing load (``load``), the faults (``schedule`` decides,
   ``faults`` executes; none start in the last ``cooldown_s``, when every fault is
   lifted), a /healthz poll that tells the planner when nodes and the coordinator
   are back, a second DKG ceremony at 40 % of the run, and a progress display on
   stderr.
4. Every node back: the planner sees all up, every process runs, and the
   coordinator has a session to every node (``launcher.wait_until_up``).
5. Checks (``checks``): each node signs in a set of t with the others cut off
   (restarted nodes unsealed their shares), the mid-run ceremony left the key active
   on all its holders or on none, the cluster stops, every audit log verifies.
6. ``report.analyse`` makes the JSON object; the promise's failures are collected.

The temporary cluster dir is removed after a run that kept the promise (unless
``keep``); otherwise it stays and the result names it.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from cluster import launcher
from cluster.chaos import checks
from cluster.chaos.faults import Executor
from cluster.chaos.httpc import HttpUnavailable, request, split_address
from cluster.chaos.load import OK, Load, LoadConfig, SignatureCheck
from cluster.chaos.proxy import Proxy, serve_proxy
from cluster.chaos.report import Promise, analyse
from cluster.chaos.schedule import Fault, Planner, ScheduleConfig
from protocol.errors import TkmsError

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    nodes: int = 5
    threshold: int = 3
    duration_s: float = 60.0
    cluster_dir: Path | None = None
    overload: bool = False
    seed: int | None = None
    keep: bool = False
    cooldown_s: float | None = None  # default: 20 % of the run, 3 to 10 s
    dkg_during_chaos: bool = True
    load: LoadConfig = field(default_factory=LoadConfig)
    schedule: ScheduleConfig | None = None  # default: node deadline from the coordinator
    promise: Promise = field(default_factory=Promise)
    up_timeout_s: float = 120.0
    back_timeout_s: float = 90.0
    dkg_timeout_s: float = 330.0
    mid_dkg_wait_s: float = 120.0  # after the load ends

    def __post_init__(self) -> None:
        if not 2 <= self.threshold <= self.nodes:
            raise launcher.ClusterError(
                f"--threshold must be in [2, {self.nodes}], got {self.threshold}"
            )
        if not self.duration_s > 0:
            raise launcher.ClusterError("--duration must be positive")

    @property
    def cooldown(self) -> float:
        if self.cooldown_s is not None:
            return self.cooldown_s
        return min(10.0, max(3.0, self.duration_s * 0.2))


@dataclass(slots=True)
class ChaosRun:
    result: dict[str, Any]
    failures: list[str]

    @property
    def held(self) -> bool:
        return not self.failures


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


async def _prepare(cfg: ChaosConfig, progress: Progress) -> tuple[launcher.ClusterLayout, bool]:
    """The proxied cluster to run against, and whether it is a temporary one."""
    if cfg.cluster_dir is not None and (cfg.cluster_dir / launcher.CLUSTER_FILE).exists():
        layout = launcher.ClusterLayout.load(cfg.cluster_dir)
        if not layout.proxied:
            raise launcher.ClusterError(
                f"{cfg.cluster_dir} is not a proxied cluster; `tkms chaos` needs one it "
                "created itself (give a new --cluster-dir, or none for a temporary one)"
            )
        return layout, False
    temp = cfg.cluster_dir is None
    root = cfg.cluster_dir or Path(tempfile.mkdtemp(prefix="tkms-chaos-"))
    progress(f"creating a proxied {cfg.threshold}-of-{cfg.nodes} cluster in {root}")
    layout = await trio.to_thread.run_sync(
        lambda: launcher.init_cluster(
            root, nodes=cfg.nodes, threshold=cfg.threshold, progress=progress, proxied=True
        )
    )
    return layout, temp


def _schedule_for(node_deadline_s: float) -> ScheduleConfig:
    """The default schedule for a coordinator that waits ``node_deadline_s`` for
    partials: overload episodes last 1.5 to 3 s longer than that."""
    hold = (node_deadline_s + 1.5, node_deadline_s + 3.0)
    return ScheduleConfig(node_deadline_s=node_deadline_s, overload_hold_s=hold)


def _node_deadline(layout: launcher.ClusterLayout) -> float:
    """The coordinator's per-request wait for node partials (``sign_timeout_s``)."""
    try:
        doc = tomllib.loads(layout.coordinator_config.read_text())
        return float(doc.get("sign_timeout_s", 2.0))
    except (OSError, ValueError, tomllib.TOMLDecodeError):
        return 2.0


async def run_chaos(cfg: ChaosConfig, *, progress: Progress) -> ChaosRun:
    """Run chaos against a proxied cluster (module header)."""
    layout, temp = await _prepare(cfg, progress)
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1 << 32)
    run = _Run(cfg, layout, seed, progress)
    failure: TkmsError | None = None  # raised as itself, not inside an exception group
    try:
        async with trio.open_nursery() as nursery:
            for node in layout.nodes:
                target = split_address(node.listen_address)
                run.proxies[node.name] = await nursery.start(
                    serve_proxy, split_address(node.address)[1], target
                )
            try:
                await run.main()
            except TkmsError as exc:
                failure = exc
            finally:
                with trio.CancelScope(shield=True):
                    progress("stopping the cluster...")
                    await trio.to_thread.run_sync(lambda: launcher.down(layout, progress=progress))
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        result = run.finish()
    except BaseException:
        progress(f"cluster dir kept for inspection: {layout.root}")
        raise
    if temp and result.held and not cfg.keep:
        shutil.rmtree(layout.root, ignore_errors=True)
    else:
        result.result["clusterDir"] = str(layout.root)
    return result


class _Run:
    def __init__(
        self, cfg: ChaosConfig, layout: launcher.ClusterLayout, seed: int, progress: Progress
    ) -> None:
        self.cfg = cfg
        self.layout = layout
        self.seed = seed
        self.progress = progress
        self.proxies: dict[str, Proxy] = {}
        self.names = [n.name for n in layout.nodes]
        self.api_key = layout.api_key_file.read_text().strip()
        self.key_id = f"chaos-{int(time.time())}-{seed % 10_000:04d}"
        self.failures: list[str] = []
        self.extra: dict[str, Any] = {"seed": seed, "durationS": cfg.duration_s}
        self.planner: Planner | None = None
        self.load: Load | None = None
        self.executor: Executor | None = None
        self.mid_dkg: checks.DkgOutcome | None = None
        self.start = 0.0
        self.load_end = 0.0
        self._started: dict[tuple[str | None, float], trio.Event] = {}
        self._printed = 0

    # -- phases ------------------------------------------------------------------------

    async def main(self) -> None:
        cfg = self.cfg
        self.progress("starting the cluster behind the proxies...")
        await trio.to_thread.run_sync(
            lambda: launcher.up(self.layout, progress=self.progress, timeout=cfg.up_timeout_s)
        )
        self.progress(f"DKG for key {self.key_id} ({cfg.threshold}-of-{len(self.names)})...")
        dkg = await checks.run_dkg(
            self.layout.http,
            self.api_key,
            self.key_id,
            cfg.threshold,
            deadline_s=cfg.dkg_timeout_s,
        )
        if dkg.pubkey is None:
            raise checks.ChaosError(f"the DKG before the run failed: {dkg.outcome} {dkg.detail}")
        check = SignatureCheck(*dkg.pubkey)
        schedule = cfg.schedule or _schedule_for(_node_deadline(self.layout))
        self.start = trio.current_time()
        self.planner = Planner(
            self.names,
            cfg.threshold,
            overload=cfg.overload,
            seed=self.seed,
            config=schedule,
            start=self.start,
        )
        self.load = Load(
            self.layout.http,
            self.api_key,
            self.key_id,
            check,
            config=cfg.load,
            rng=random.Random(self.seed ^ 0x5EED),
        )
        self.executor = Executor(self.layout, self.proxies)
        self.progress(
            f"chaos for {cfg.duration_s:g} s (seed {self.seed}; faults stop "
            f"{self.cfg.cooldown:g} s before the end)"
        )
        await self._chaos()
        await self._all_back()
        self.progress("rejoin check: each node signs with the others cut off...")
        rejoin = await checks.rejoin_check(
            self.layout.http, self.api_key, self.key_id, check, self.proxies, cfg.threshold
        )
        self.extra["rejoined"] = rejoin["nodes"]
        self.extra["rejoinRounds"] = rejoin["rounds"]
        if not rejoin["ok"]:
            bad = [r for r in rejoin["rounds"] if not r["ok"]]
            self.failures.append(f"rejoin check failed: {bad}")
        self._check_mid_dkg()

    async def _chaos(self) -> None:
        if self.planner is None or self.load is None or self.executor is None:
            raise checks.ChaosError("the run is not set up")
        load, cfg = self.load, self.cfg
        end = self.start + cfg.duration_s
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._faults, nursery, end - cfg.cooldown)
            nursery.start_soon(self._health, done)
            nursery.start_soon(self._display, done)
            if cfg.dkg_during_chaos:
                nursery.start_soon(self._mid_run_dkg, self.start + 0.4 * cfg.duration_s)
            await load.run(end)
            self.load_end = trio.current_time()
            planner = self.planner
            await _until(
                lambda: planner.all_up() and not planner.coordinator_down, cfg.back_timeout_s
            )
            if cfg.dkg_during_chaos:
                await _until(lambda: self.mid_dkg is not None, cfg.mid_dkg_wait_s)
            done.set()
            nursery.cancel_scope.cancel()
        self._print_events()

    async def _faults(self, nursery: trio.Nursery, faults_end: float) -> None:
        planner, executor = self.planner, self.executor
        if planner is None or executor is None:
            return
        while trio.current_time() < faults_end:
            now = trio.current_time()
            for fault in planner.lift_due(now):
                nursery.start_soon(self._lift, fault)
            for fault in planner.plan(now):
                nursery.start_soon(self._begin, fault)
            await trio.sleep(0.05)
        for fault in planner.lift_all(trio.current_time()):
            nursery.start_soon(self._lift, fault)

    async def _begin(self, fault: Fault) -> None:
        started = self._started.setdefault((fault.node, fault.started_at), trio.Event())
        if self.executor is not None:
            await self.executor.start(fault)
        started.set()

    async def _lift(self, fault: Fault) -> None:
        started = self._started.setdefault((fault.node, fault.started_at), trio.Event())
        with trio.move_on_after(30.0):
            await started.wait()  # never SIGCONT before the SIGSTOP went out
        if self.executor is not None:
            await self.executor.lift(fault)

    async def _health(self, done: trio.Event) -> None:
        planner = self.planner
        if planner is None:
            return
        while not done.is_set():
            polled_at = trio.current_time()
            doc = await self._healthz()
            now = trio.current_time()
            if doc is not None:
                up = launcher.nodes_up(doc)
                if planner.coordinator_waiting(polled_at) and self._coordinator_ready(doc):
                    planner.coordinator_recovered(now)
                if not planner.coordinator_down:
                    for name in planner.waiting_for_health(polled_at):
                        if up.get(name):
                            planner.recovered(name, now)
            await trio.sleep(0.2)

    def _coordinator_ready(self, doc: dict[str, Any]) -> bool:
        up = launcher.nodes_up(doc)
        keys = doc.get("keys", [])
        can_sign = any(
            isinstance(k, dict) and k.get("keyId") == self.key_id and k.get("canSign") for k in keys
        )
        return can_sign and all(up.get(n) for n in self.names)

    async def _healthz(self) -> dict[str, Any] | None:
        try:
            resp = await request(self.layout.http, "GET", "/healthz", deadline_s=2.0)
        except HttpUnavailable:
            return None
        doc = resp.json()
        return doc if isinstance(doc, dict) else None

    async def _mid_run_dkg(self, at: float) -> None:
        await trio.sleep_until(at)
        key_id = f"{self.key_id}-mid"
        self.progress(f"  DKG during chaos: {key_id} (minHolders {self.cfg.threshold})")
        self.mid_dkg = await checks.run_dkg(
            self.layout.http,
            self.api_key,
            key_id,
            self.cfg.threshold,
            min_holders=self.cfg.threshold,
            deadline_s=self.cfg.dkg_timeout_s,
        )
        self.progress(f"  DKG during chaos: {self.mid_dkg.outcome} {self.mid_dkg.detail}")

    async def _all_back(self) -> None:
        if self.executor is None:
            return
        started = await self.executor.ensure_running()
        if started:
            self.failures.append(f"processes were not running at the end: {started}")
        try:
            await trio.to_thread.run_sync(
                lambda: launcher.wait_until_up(
                    self.layout, timeout=self.cfg.back_timeout_s, progress=self.progress
                )
            )
            self.extra["allNodesBack"] = True
        except launcher.ClusterError as exc:
            self.extra["allNodesBack"] = False
            self.failures.append(f"not every node came back: {exc}")

    def _check_mid_dkg(self) -> None:
        if not self.cfg.dkg_during_chaos:
            return
        if self.mid_dkg is None:
            key_id = f"{self.key_id}-mid"
            self.mid_dkg = checks.DkgOutcome(key_id, "timeout", None, detail="no answer")
            self.failures.append("the DKG during chaos neither completed nor aborted in time")
        states = checks.key_states(self.layout, self.mid_dkg.key_id)
        consistent, why = checks.dkg_consistent(self.mid_dkg, states, self.cfg.threshold)
        self.extra["dkgDuringChaos"] = {
            **self.mid_dkg.to_json(),
            "nodeStates": states,
            "consistent": consistent,
            "reason": why,
        }
        if not consistent:
            self.failures.append(f"the DKG during chaos did not end cleanly: {why}")

    # -- progress ----------------------------------------------------------------------

    def _print_events(self) -> None:
        if self.planner is None:
            return
        events = self.planner.events
        for ev in events[self._printed :]:
            what = ev.detail or ev.kind.value
            who = ev.node or "coordinator"
            self.progress(f"  +{ev.time - self.start:6.2f}s {ev.action:<5} {who} {what}")
        self._printed = len(events)

    async def _display(self, done: trio.Event) -> None:
        tty = _stderr_is_tty()
        every = 1.0 if tty else 5.0
        last = 0.0
        while not done.is_set():
            await trio.sleep(0.5)
            self._print_events()
            now = trio.current_time()
            if now - last >= every and self.load is not None and self.planner is not None:
                last = now
                ld = self.load
                down = ",".join(sorted(self.planner.down())) or "-"
                coord = " coordinator restarting" if self.planner.coordinator_down else ""
                self.progress(
                    f"[{now - self.start:5.1f}s] sent {ld.sent} ok {ld.count(OK)} "
                    f"503 {ld.count('503')} invalid {ld.count('invalid')} "
                    f"in flight {ld.in_flight} | down {down}{coord}"
                )

    # -- result ------------------------------------------------------------------------

    def finish(self) -> ChaosRun:
        if self.planner is None or self.load is None:
            raise checks.ChaosError("the run ended before the load started")
        audit = checks.verify_audit_logs(self.layout)
        audit_ok = all(r.get("valid") for r in audit.values())
        if not audit_ok:
            bad = {n: r.get("reason") for n, r in audit.items() if not r.get("valid")}
            self.failures.append(f"audit logs do not verify: {bad}")
        analysis = analyse(
            samples=self.load.samples,
            sent=self.load.sent,
            unverified=self.load.unverified,
            timeline=self.planner.timeline,
            events=self.planner.events,
            counts=self.planner.counts,
            n=len(self.names),
            threshold=self.cfg.threshold,
            names=self.names,
            load_end=self.load_end,
            origin=self.start,
            signatures=self.load.kept_signatures(),
            promise=self.cfg.promise,
        )
        failures = analysis.failures + self.failures
        errors = self.executor.errors if self.executor else []
        result = {
            **analysis.result,
            **self.extra,
            "keyId": self.key_id,
            "overloadEpisodes": self.planner.overload_episodes,
            "auditLogsValid": audit_ok,
            "auditLogs": {n: _audit_summary(r) for n, r in audit.items()},
            "faultErrors": [f"+{t - self.start:.2f}s {m}" for t, m in errors],
            "timeline": [e.to_json(self.start) for e in self.planner.events],
            "promise": {"held": not failures, "failures": failures},
        }
        return ChaosRun(result, failures)


def _audit_summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("valid", "records", "reason", "tornTail", "anchoredSeq", "unanchoredTail")
    return {k: report.get(k) for k in keys}


async def _until(condition: Callable[[], bool], within_s: float) -> bool:
    """Poll ``condition`` every 0.1 s for at most ``within_s``; its last value."""
    with trio.move_on_after(within_s):
        while True:
            if condition():
                return True
            await trio.sleep(0.1)
    return condition()
