"""mmrec.runtime: CPU budget from affinity and cgroup files (fake trees), thread sizing, device path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmrec import runtime
from mmrec.config import load_params
from mmrec.errors import ConfigError
from mmrec.runtime import (
    CpuBudget,
    affinity_cpus,
    auto_threads,
    bf16_supported,
    cgroup_cpu_quota,
    cpu_budget,
    others_running,
    resolve_device,
    resolve_threads,
    to_device,
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- cgroup v2 ----------------------------------------------------------------------------------


def test_v2_quota_of_the_process_group(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    write(proc, "0::/kubepods/pod1/ctr\n")
    write(root / "kubepods/pod1/ctr/cpu.max", "150000 100000\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.5)


def test_v2_tightest_ancestor_wins(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    write(proc, "0::/a/b\n")
    write(root / "a/b/cpu.max", "max 100000\n")  # unlimited itself ...
    write(root / "a/cpu.max", "200000 100000\n")  # ... but its parent allows 2 CPUs
    write(root / "cpu.max", "800000 100000\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(2.0)


def test_v2_unlimited_and_garbage_mean_no_quota(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    write(proc, "0::/\n")
    write(root / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(root, proc) is None
    write(root / "cpu.max", "lots\n")
    assert cgroup_cpu_quota(root, proc) is None
    write(root / "cpu.max", "0 100000\n")
    assert cgroup_cpu_quota(root, proc) is None


def test_no_cgroup_files_at_all(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "nothing", tmp_path / "missing") is None


# -- cgroup v1 ----------------------------------------------------------------------------------


def test_v1_cfs_quota_at_the_mount_root_inside_a_container(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    # /proc/self/cgroup names the host path; inside the container the mount root is the group
    write(proc, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    write(root / "cpu,cpuacct/cpu.cfs_quota_us", "50000\n")
    write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(0.5)


def test_v1_quota_minus_one_is_unlimited(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    write(proc, "4:cpu,cpuacct:/\n")
    write(root / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(root, proc) is None


def test_v1_quota_at_the_host_path(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    write(proc, "3:cpu:/user.slice/job\n")
    write(root / "cpu/user.slice/job/cpu.cfs_quota_us", "300000\n")
    write(root / "cpu/user.slice/job/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(3.0)


# -- budget and threads -------------------------------------------------------------------------


def test_affinity_counts_the_allowed_cpus() -> None:
    assert affinity_cpus(lambda pid: {0, 3, 5}) == 3

    def broken(pid: int) -> set[int]:
        raise OSError("no affinity here")

    assert affinity_cpus(broken) is None


def test_budget_is_the_tightest_limit_rounded_down(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    write(proc, "0::/\n")
    write(root / "cpu.max", "250000 100000\n")  # 2.5 CPUs of quota
    budget = cpu_budget(root, proc, getaffinity=lambda pid: set(range(8)))
    assert (budget.affinity, budget.quota) == (8, pytest.approx(2.5))
    assert budget.cpus == 2
    assert cpu_budget(root, proc, getaffinity=lambda pid: {1}).cpus == 1
    assert CpuBudget(affinity=None, quota=0.3, host=64).cpus == 1  # never 0
    assert CpuBudget(affinity=None, quota=None, host=6).cpus == 6


def test_threads_divided_among_parallel_tasks() -> None:
    assert resolve_threads("auto", 1, environ={}, cpus=8) == 8
    assert resolve_threads("auto", 4, environ={}, cpus=8) == 2
    assert resolve_threads("auto", 4, environ={}, cpus=2) == 1  # never 0
    assert resolve_threads(6, 2, environ={}, cpus=64) == 3  # an explicit budget ignores the CPUs


def test_auto_leaves_cpus_other_processes_run_on_unless_a_quota_guarantees_them(tmp_path: Path) -> None:
    bare = CpuBudget(affinity=4, quota=None, host=4)
    assert auto_threads(bare, environ={}, busy=0) == 4
    assert auto_threads(bare, environ={}, busy=3) == 1
    assert auto_threads(bare, environ={}, busy=9) == 1  # never below 1
    assert auto_threads(bare, environ={"OMP_NUM_THREADS": "2"}, busy=0) == 2  # the user's cap
    quota = CpuBudget(affinity=8, quota=4.0, host=8)
    assert auto_threads(quota, environ={}, busy=6) == 4  # the quota is a guarantee
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("7.02 5.10 2.33 4/412 12345\n")  # 4 runnable, this reader among them
    assert others_running(loadavg, samples=3, interval=0) == 3
    loadavg.write_text("garbage\n")
    assert others_running(loadavg, samples=1) == 0
    assert others_running(tmp_path / "missing", samples=1) == 0


def test_env_overrides_the_setting_and_bad_values_name_the_source() -> None:
    assert resolve_threads("auto", 1, environ={"MMREC_THREADS": "3"}, cpus=16) == 3
    assert resolve_threads(8, 1, environ={"MMREC_THREADS": "auto"}, cpus=2) == 2
    with pytest.raises(ConfigError, match="MMREC_THREADS"):
        resolve_threads("auto", 1, environ={"MMREC_THREADS": "many"}, cpus=2)
    with pytest.raises(ConfigError, match=r"runtime\.threads"):
        resolve_threads(0, 1, environ={}, cpus=2)


def test_params_section(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("runtime:\n  threads: 3\n")
    assert load_params(tmp_path / "params.yaml", environ={}).runtime.threads == 3
    assert load_params(None, environ={}).runtime.threads == "auto"
    with pytest.raises(ConfigError, match="runtime"):
        load_params(None, environ={"MMREC__RUNTIME__THREADS": "0"})


def test_apply_threads_sizes_torch_and_blas() -> None:
    import torch
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    try:
        assert runtime.apply_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    finally:
        runtime.apply_threads(before)


# -- device path (CPU machine; CUDA mocked) -----------------------------------------------------


def test_auto_device_prefers_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", environ={}) == "cuda"
    assert resolve_device("auto", environ={"MMREC_DEVICE": "cpu"}) == "cpu"  # overridable
    assert resolve_device("cpu", environ={}) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", environ={}) == "cpu"
    with pytest.raises(ConfigError, match="no CUDA"):
        resolve_device("cuda:0", environ={})
    with pytest.raises(ConfigError, match="expected auto"):
        resolve_device("tpu", environ={})


def test_bf16_only_where_the_gpu_supports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert bf16_supported("cuda") and bf16_supported("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not bf16_supported("cuda")
    assert not bf16_supported("cpu")


class FakeHostTensor:
    """Stands in for a CPU tensor: records pinning and the copy's arguments."""

    def __init__(self, pinned: bool = False) -> None:
        self.pinned, self.calls = pinned, []
        self.device = type("Dev", (), {"type": "cpu"})()

    def is_pinned(self) -> bool:
        return self.pinned

    def pin_memory(self) -> FakeHostTensor:
        out = FakeHostTensor(pinned=True)
        out.calls = self.calls
        self.calls.append("pin")
        return out

    def to(self, device: object, non_blocking: bool = False) -> tuple[object, bool, bool]:
        self.calls.append("to")
        return device, non_blocking, self.pinned


def test_to_cuda_goes_through_pinned_memory_non_blocking() -> None:
    t = FakeHostTensor()
    assert to_device(t, "cuda:0") == ("cuda:0", True, True)  # type: ignore[arg-type]
    assert t.calls == ["pin", "to"]
    already = FakeHostTensor(pinned=True)
    to_device(already, "cuda")  # type: ignore[arg-type]
    assert already.calls == ["to"]  # no second pinning copy


def test_to_cpu_is_a_plain_move() -> None:
    import torch

    x = torch.from_numpy(np.arange(4, dtype=np.float32))
    out = to_device(x, "cpu")
    assert out.device.type == "cpu" and not out.is_pinned()
    t = FakeHostTensor()
    assert to_device(t, "cpu") == ("cpu", False, False)  # type: ignore[arg-type]
    assert t.calls == ["to"]
