"""How much of the machine this process may use: CPU threads and the compute device.

Why this exists. torch, OpenBLAS/MKL and FAISS size their thread pools from the number of
cores the *host* has. A container with a CPU quota, a process pinned to a few cores, or a
pipeline running four extraction tasks side by side each see every core and start that many
threads; the threads then fight over the few cores they really have. On a busy 2-core machine
torch with 2 intra-op threads was measured 9-20x slower than with 1, and a 6 s training took
minutes (issue 15). So the pool is sized from what the process may actually use:

    cpus = min(len(os.sched_getaffinity(0)), cgroup CPU quota)          (v2 cpu.max, v1 cfs_*)
    threads per task = max(1, floor(budget / parallel tasks)),   budget = cpus ("auto") or N

With `auto`, two more limits apply. An `OMP_NUM_THREADS` the user set caps the budget (it is
the conventional way to ask for fewer threads). And where no cgroup quota guarantees the
process its CPUs (a bare process on a shared host), CPUs that other processes are running on
right now are left to them: the budget is reduced by the other runnable tasks in
/proc/loadavg (sampled a few times, median), never below 1. A container's quota is a
guarantee, so host-wide load (which /proc/loadavg reports there too) is ignored under one.

and applied to torch, to the BLAS pools numpy/scipy use (threadpoolctl) and to FAISS.
`runtime.threads` in params.yaml sets the budget (`auto` or N); the environment variable
`MMREC_THREADS` overrides it for one run.

Device. `resolve_device("auto")` picks cuda when torch sees one, else cpu (`MMREC_DEVICE`
overrides "auto"); `to_device` copies host tensors through pinned memory with
`non_blocking=True` on CUDA, so the copy overlaps compute instead of stalling the stream;
`bf16_supported` says whether bf16 is safe to use on a device.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmrec.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ENV_THREADS = "MMREC_THREADS"
ENV_DEVICE = "MMREC_DEVICE"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_LOADAVG = Path("/proc/loadavg")


class RuntimeParams(BaseModel):
    """The `runtime:` section of params.yaml.

    Attributes:
        threads: CPU thread budget of the process: `auto` (the CPUs its affinity and cgroup
            quota allow) or a positive number; divided among tasks that run in parallel.
    """

    model_config = ConfigDict(extra="forbid")

    threads: Literal["auto"] | int = Field("auto")

    @field_validator("threads")
    @classmethod
    def _positive(cls, value: str | int) -> str | int:
        if value != "auto" and int(value) < 1:
            raise ValueError(f"runtime.threads must be auto or >= 1, got {value}")
        return value


# -- CPUs ---------------------------------------------------------------------------------------


def affinity_cpus(getaffinity: Callable[[int], set[int]] | None = None) -> int | None:
    """CPUs this process may be scheduled on (None where the OS has no affinity API)."""
    fn = getaffinity if getaffinity is not None else getattr(os, "sched_getaffinity", None)
    if fn is None:
        return None
    try:
        return len(fn(0)) or None
    except OSError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_quota(text: str | None) -> float | None:
    """`cpu.max` ("max 100000" or "<quota> <period>") -> CPUs, None when unlimited/unreadable."""
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(directory: Path) -> float | None:
    """`cpu.cfs_quota_us` / `cpu.cfs_period_us` -> CPUs; quota -1 means unlimited."""
    try:
        quota = int(_read(directory / "cpu.cfs_quota_us") or "-1")
        period = int(_read(directory / "cpu.cfs_period_us") or "0")
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _ancestors(root: Path, rel: str) -> list[Path]:
    """root/rel, its parents up to root (a quota anywhere above the process limits it too)."""
    parts = [p for p in rel.strip("/").split("/") if p and p != ".."]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota (in CPUs) of the cgroups this process is in, None when unlimited.

    cgroup v2: `cpu.max` of the process's group and of every ancestor. cgroup v1: the `cpu`
    controller's `cpu.cfs_quota_us / cpu.cfs_period_us`, looked up under the controller's mount
    both at the process's path and at the mount root (inside a container the mount root *is*
    the container's group while /proc/self/cgroup still names the host path).
    """
    lines = (_read(proc_cgroup) or "").splitlines()
    quotas: list[float] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        hier, controllers, rel = fields
        if hier == "0" and controllers == "":  # v2 unified hierarchy
            for d in _ancestors(root, rel):
                q = _v2_quota(_read(d / "cpu.max"))
                if q is not None:
                    quotas.append(q)
        elif "cpu" in controllers.split(","):  # v1
            for mount in (root / controllers, root / "cpu,cpuacct", root / "cpu"):
                if not mount.is_dir():
                    continue
                for d in [*_ancestors(mount, rel), mount]:
                    q = _v1_quota(d)
                    if q is not None:
                        quotas.append(q)
                break
    return min(quotas) if quotas else None


@dataclass(frozen=True)
class CpuBudget:
    """What limits this process: affinity, cgroup quota, and the resulting usable CPUs."""

    affinity: int | None
    quota: float | None
    host: int

    @property
    def cpus(self) -> int:
        """Whole CPUs usable (a fractional quota rounds down, but never below 1)."""
        limits = [float(self.host)]
        if self.affinity:
            limits.append(float(self.affinity))
        if self.quota:
            limits.append(self.quota)
        return max(1, math.floor(min(limits) + 1e-9))


def cpu_budget(
    root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
    getaffinity: Callable[[int], set[int]] | None = None,
) -> CpuBudget:
    """The CPU limits of this process (paths and affinity function injectable for tests)."""
    return CpuBudget(affinity_cpus(getaffinity), cgroup_cpu_quota(root, proc_cgroup), os.cpu_count() or 1)


def others_running(loadavg: Path = PROC_LOADAVG, samples: int = 5, interval: float = 0.02) -> int:
    """Tasks other than this one running or runnable now (median of `samples` reads of loadavg).

    The 4th field of /proc/loadavg is "runnable/total"; the reading process is one of the
    runnable ones. Returns 0 where the file is missing or unreadable.
    """
    import time

    counts = []
    for n in range(max(1, samples)):
        text = _read(loadavg)
        try:
            counts.append(max(0, int(text.split()[3].split("/")[0]) - 1) if text else 0)
        except (IndexError, ValueError):
            counts.append(0)
        if n + 1 < samples:
            time.sleep(interval)
    return int(np.median(counts)) if counts else 0


def auto_threads(
    budget: CpuBudget | None = None, environ: Mapping[str, str] | None = None, busy: int | None = None
) -> int:
    """The `auto` budget: usable CPUs, capped by OMP_NUM_THREADS, less CPUs others use (no quota)."""
    env = os.environ if environ is None else environ
    b = budget if budget is not None else cpu_budget()
    n = b.cpus
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    if b.quota is None and n > 1:
        n -= busy if busy is not None else others_running()
    return max(1, n)


def resolve_threads(
    setting: str | int | None = "auto",
    parallel_tasks: int = 1,
    environ: Mapping[str, str] | None = None,
    cpus: int | None = None,
) -> int:
    """Threads for each of `parallel_tasks` tasks sharing this process's budget.

    Args:
        setting: `auto` (the usable CPUs) or a positive budget; `MMREC_THREADS` overrides it.
        parallel_tasks: tasks running side by side in this process (each gets a share).
        environ: environment to read the override from (default: os.environ).
        cpus: the `auto` budget (default: `auto_threads`: usable CPUs less what others use).

    Raises:
        ConfigError: a budget that is neither `auto` nor a positive integer.
    """
    env = os.environ if environ is None else environ
    where = "runtime.threads"
    if env.get(ENV_THREADS, "").strip():
        setting, where = env[ENV_THREADS].strip(), ENV_THREADS
    if setting is None or str(setting).strip().lower() == "auto":
        budget = cpus if cpus is not None else auto_threads(environ=env)
    else:
        try:
            budget = int(str(setting).strip())
        except ValueError:
            budget = 0
        if budget < 1:
            raise ConfigError(f"{where}={setting!r}: expected auto or a positive number of threads")
    return max(1, budget // max(1, int(parallel_tasks)))


_applied: int | None = None


def apply_threads(n: int) -> int:
    """Size torch's intra-op pool, the BLAS pools (numpy/scipy) and FAISS to `n` threads.

    Process-wide: every library keeps one pool per process, so tasks sharing the process must
    have been counted in `n` already (see `resolve_threads`). Returns `n`.
    """
    global _applied
    n = max(1, int(n))
    try:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - optional
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover - optional
        pass
    if _applied != n:
        log.info("thread pools sized to %d (torch, BLAS, FAISS)", n)
    _applied = n
    return n


def configure_threads(params: RuntimeParams | None = None, parallel_tasks: int = 1) -> int:
    """`resolve_threads` + `apply_threads` for a stage: the one call entry points make."""
    setting = params.threads if params is not None else "auto"
    return apply_threads(resolve_threads(setting, parallel_tasks))


# -- device -------------------------------------------------------------------------------------


def resolve_device(setting: str = "auto", environ: Mapping[str, str] | None = None) -> str:
    """`auto` -> `cuda` when torch sees a GPU, else `cpu` (`MMREC_DEVICE` overrides auto).

    Raises:
        ConfigError: an explicit cuda device on a machine without one, or an unknown device.
    """
    import torch

    env = os.environ if environ is None else environ
    if setting == "auto" and env.get(ENV_DEVICE, "").strip():
        setting = env[ENV_DEVICE].strip()
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {setting!r} but torch sees no CUDA GPU here; use auto or cpu")
        return setting
    if setting in ("cpu", "mps"):
        return setting
    raise ConfigError(f"device {setting!r}: expected auto, cpu, cuda or cuda:N")


def bf16_supported(device: str) -> bool:
    """Whether bf16 compute is native on `device` (CUDA with bf16 units; CPUs: treated as no).

    CPUs without AMX/AVX512-BF16 emulate bf16 slower than fp32, so reduced precision is only
    chosen automatically on GPUs that support it.
    """
    if not str(device).startswith("cuda"):
        return False
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def to_device(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Move a host tensor to `device`; to CUDA through pinned memory with a non-blocking copy.

    A copy from pageable memory makes the GPU wait for a staging copy; from pinned memory the
    DMA engine copies while the stream computes. On CPU this is a no-op move.
    """
    target = str(device)
    if not target.startswith("cuda") or tensor.device.type != "cpu":
        return tensor.to(device)
    if not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
