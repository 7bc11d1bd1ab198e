"""The cluster scheduler (hspi_onnx/run/schedule.py) driven by fake nodes, in milliseconds: who runs
what, cross-checks, failures, nodes dying under their jobs. The same class runs `db build --ray`
on a real cluster (tests/test_ray.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from hspi_onnx.labels import Platform
from hspi_onnx.outputs import RunResult
from hspi_onnx.run.contract import PlatformRunner, Sequential, SingleRunner
from hspi_onnx.run.runner import PlatformCrashed, PlatformFailed, Runner
from hspi_onnx.run.schedule import Lost, Scheduler


@dataclass
class FakeNode:
    id: str
    offers: set[str]
    cap: int = 1
    alive: bool = True
    bits: int = 0  # what its outputs hold: two nodes with other bits disagree on a cross-check

    @property
    def short(self) -> str:
        return self.id[:12]

    def capacity(self, kind: str) -> int:
        return self.cap


@dataclass
class FakeCluster:
    """Jobs finish in submission order, one per wait; ``slow`` jobs wait for everything else,
    ``failing`` labels fail, ``dies`` names a node that dies under its next job."""

    nodes: dict
    slow: set = field(default_factory=set)
    failing: set = field(default_factory=set)
    dies: str = ""
    lost: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    submitted: list = field(default_factory=list)
    running: dict = field(default_factory=dict)
    peak: dict = field(default_factory=dict)

    def submit(self, job, node, repeat):
        handle = len(self.submitted)
        self.submitted.append((job.label, node.id, job.cross, job.probes, repeat))
        self.running[handle] = (job, node)
        busy = sum(1 for _, n in self.running.values() if n.id == node.id)
        self.peak[node.id] = max(self.peak.get(node.id, 0), busy)
        return handle

    def wait(self, handles, timeout):
        fast = [h for h in handles if self.running[h][0].label not in self.slow]
        return min(fast or handles)

    def result(self, handle, job):
        _, node = self.running.pop(handle)
        if node.id == self.dies:
            self.dies = ""
            node.alive = False
            raise Lost("NodeDiedError", True)
        if job.label in self.failing:
            return PlatformFailed(f"{job.label} failed")
        n = job.probes
        out = np.full((n, 2), node.bits, dtype=np.float32)
        return RunResult(job.label, "m", "m", "p", "p", np.arange(n), {"y": out}, host={"ray_node": node.id})

    def refresh(self, dead=""):
        for node in self.nodes.values():
            if node.alive and (node.id == dead or not node.alive):
                node.alive = False
            if not node.alive and node.id not in self.lost:
                self.lost.append(node.id)

    def note(self, line):
        self.notes.append(line)


def plat(i: int, bs: int = 8) -> Platform:
    return Platform.make("rt", "1", "cpu:avx2:x", "fp32", bs=bs, i=i)


def run(cluster: FakeCluster, labels: list[Platform], cross: int = 0, n: int = 16):
    sched = Scheduler(cluster, cross_check=cross, max_tries=3, poll_s=0)
    events = []
    out = list(sched.stream([(None, p) for p in labels], n, 16, lambda k, d: events.append((k, d))))
    return out, sched, events


def test_rarest_first_and_each_node_within_its_capacity():
    a, b, c = plat(1), plat(2), plat(3)
    nodes = {"n1": FakeNode("n1", {str(a), str(b), str(c)}), "n2": FakeNode("n2", {str(c)}, cap=2)}
    cluster = FakeCluster(nodes)
    out, _, events = run(cluster, [a, b, c])
    assert sorted(str(p) for _, p, _ in out) == sorted(map(str, (a, b, c)))
    assert all(isinstance(r, RunResult) for _, _, r in out)
    # a and b only n1 offers go first; c, which n2 offers too, takes n2 while n1 is busy; b waits for n1
    assert [s[:2] for s in cluster.submitted] == [(str(a), "n1"), (str(c), "n2"), (str(b), "n1")]
    assert cluster.peak["n1"] == 1 and cluster.peak["n2"] <= 2
    assert [d["platform"] for k, d in events if k == "start"] == [s[0] for s in cluster.submitted if not s[2]]


def test_a_platform_two_nodes_offer_is_cross_checked_on_whole_batches():
    a = plat(1, bs=8)
    nodes = {"n1": FakeNode("n1", {str(a)}), "n2": FakeNode("n2", {str(a)}, bits=1)}
    cluster = FakeCluster(nodes)
    out, sched, _ = run(cluster, [a], cross=3, n=16)
    ((_, _, main),) = out
    main_run, cross_run = cluster.submitted
    assert not main_run[2] and cross_run[2] and cross_run[1] != main_run[1]
    assert cross_run[3] == 8 and cross_run[4] == 0  # 3 probes rounded up to a batch of 8; no repeat
    assert sched.cross_checked[str(a)]["differing"] == 8 and main.cross_check["probes"] == 8


def test_failures_are_outcomes_and_slow_jobs_do_not_hold_others():
    a, b, c = plat(1), plat(2), plat(3)
    nodes = {"n1": FakeNode("n1", {str(a), str(b), str(c)}, cap=3)}
    cluster = FakeCluster(nodes, slow={str(a)}, failing={str(b)})
    out, _, _ = run(cluster, [a, b, c])
    assert [str(p) for _, p, _ in out][-1] == str(a)  # the slow one last
    by = {str(p): r for _, p, r in out}
    assert isinstance(by[str(b)], PlatformFailed) and isinstance(by[str(c)], RunResult)


def test_a_job_lost_with_its_node_runs_again_elsewhere_or_fails():
    a, b = plat(1), plat(2)
    nodes = {"n1": FakeNode("n1", {str(a), str(b)}), "n2": FakeNode("n2", {str(a)})}
    cluster = FakeCluster(nodes, dies="n1")
    out, _, _ = run(cluster, [a, b])
    by = {str(p): r for _, p, r in out}
    assert isinstance(by[str(a)], RunResult) or isinstance(by[str(b)], RunResult)
    lost_job = cluster.submitted[0][0]
    if lost_job == str(a):  # n2 offers it too: it ran again there
        assert isinstance(by[str(a)], RunResult) and any("run again elsewhere" in n for n in cluster.notes)
        assert isinstance(by[str(b)], PlatformCrashed) and "no live node offers" in str(by[str(b)])
    else:  # only the dead node offered it
        assert isinstance(by[str(b)], PlatformCrashed) and "no other live node" in str(by[str(b)])
    assert cluster.lost == ["n1"]


def test_no_live_node_fails_every_job_naming_the_lost_nodes():
    a = plat(1)
    nodes = {"n1": FakeNode("n1", {str(a)}, alive=False)}
    cluster = FakeCluster(nodes, lost=["n1"])
    ((_, _, outcome),) = run(cluster, [a])[0]
    assert isinstance(outcome, PlatformCrashed) and "nodes lost: n1" in str(outcome)


def test_runners_implement_the_contract():
    assert isinstance(Runner(), PlatformRunner) and isinstance(Runner(), SingleRunner)
    assert issubclass(Runner, Sequential)
    from hspi_onnx.query.remote import RemoteRunner

    assert issubclass(RemoteRunner, Sequential)
    pytest.importorskip("ray")
    from hspi_onnx.run.cluster import RayRunner

    for name in ("stream", "prestart", "close", "__enter__", "__exit__", "submit", "wait", "result", "refresh", "note"):
        assert callable(getattr(RayRunner, name)), name
