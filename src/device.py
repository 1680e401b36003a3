"""The one device and precision policy: which device, which training precision, which decoding weights, and why.

Every script asks here, so "which device?" and "which precision?" have one answer in the whole repo, and the
answer comes with its reason, printed at start-up and recorded next to the numbers it produced.

Why the CPU needs a policy of its own: bf16 halves the bytes of every tensor, but whether it is *faster* depends
on the CPU. With AVX512_BF16 (AMD Zen 4, Intel Cooper Lake and later) or AMX-BF16 (Intel Sapphire Rapids and
later), bf16 matmuls run natively, 2-3x faster than fp32. Without them (AVX2-only CPUs) PyTorch emulates bf16
matmuls at about 1 GFLOP/s, a hundred times slower than fp32. So `auto` reads the CPU's flags, and where it
cannot read them it times one small matmul in both precisions.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# CPU flags of native bf16 matmuls, and their names; the first one found is named (AMX before AVX512_BF16: oneDNN
# runs bf16 products on the AMX tiles where a CPU has both)
NATIVE_BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512_BF16", "bf16": "Arm BF16"}
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "asimd", "bf16")  # what describe_hardware names
PROBE_SPEEDUP = 1.5  # bf16 must beat fp32 by this much in the probe to be called native
COMPILE_MIN_STEPS = 2000  # auto compiles runs at least this long: they pay the compiler's warm-up back many times
COMPILE_MIN_SECONDS = 300.0  # ... and, when a run has a --max-time, only one of at least this many seconds


# ----------------------------------------------------------------------------- devices

def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """How many CPUs' worth of time this process's container may use (docker --cpus, a Kubernetes CPU limit), from
    its cgroup: v2's cpu.max ("200000 100000": 2 CPUs), else v1's cpu.cfs_quota_us / cpu.cfs_period_us. None where
    there is no quota."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota, period = (int((root / "cpu" / f"cpu.cfs_{name}_us").read_text()) for name in ("quota", "period"))
        return quota / period if quota > 0 else None
    return None


def fit_threads_to_cpu_quota() -> None:
    """PyTorch starts a thread per core it sees, and in a container it sees the host's cores, not the container's
    CPU quota: 32 threads sharing 2 CPUs' worth of time mostly wait for each other. Use as many threads as the quota
    allows (rounded up), unless OMP_NUM_THREADS chose a number."""
    quota = cgroup_cpu_quota()
    if quota is None or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, math.ceil(quota))
    if threads < torch.get_num_threads():
        print(f"[cpu: {threads} thread(s), this container's CPU quota ({quota:g} CPUs), not one per core of the "
              f"host ({torch.get_num_threads()}); OMP_NUM_THREADS overrides]", file=sys.stderr)
        torch.set_num_threads(threads)


def same_threads_env() -> dict:
    """The environment of a child process that is timed or measured beside this one: the same number of threads
    (this process's may have been fitted to a container's CPU quota, which a fresh torch would not know)."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA > MPS > CPU, unless the user asks for one; asking for a missing one is an error. The CPU's threads are
    fitted to a container's CPU quota first (fit_threads_to_cpu_quota): every device runs some work there."""
    fit_threads_to_cpu_quota()
    requested = (requested or "auto").lower()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    kind = requested.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {requested} asked for, but this machine has no CUDA GPU; use --device cpu or auto")
    if kind == "mps" and not has_mps:
        raise UserError(f"--device {requested} asked for, but MPS is not available here; use --device cpu or auto")
    if kind not in ("cuda", "mps", "cpu"):
        raise UserError(f"unknown --device {requested!r}; choose auto, cpu, cuda, cuda:N or mps")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UserError(f"unknown --device {requested!r}; choose auto, cpu, cuda, cuda:N or mps") from None
    gpus = torch.cuda.device_count() if kind == "cuda" else 0
    if kind == "cuda" and device.index is not None and device.index >= gpus:
        raise UserError(f"--device {requested} asked for, but this machine has {gpus} CUDA GPU(s): "
                        f"use cuda:0 to cuda:{gpus - 1}, or cuda")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings measure work and not kernel launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ----------------------------------------------------------------------------- the CPU

def cpu_flags() -> set[str]:
    """The CPU's feature flags as the OS names them (Linux: /proc/cpuinfo 'flags' on x86, 'Features' on Arm;
    macOS on Apple silicon: the sysctl hw.optional.arm.FEAT_* set to 1). Empty where they cannot be read."""
    flags: set[str] = set()
    for line in cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    if not flags and platform.system() == "Darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["sysctl", "hw.optional"], capture_output=True, text=True, timeout=5).stdout
            flags = {line.split(":")[0].rsplit("FEAT_", 1)[-1].lower() for line in out.splitlines()
                     if "FEAT_" in line and line.strip().endswith(": 1")}
    return flags


def cpuinfo() -> str:
    """/proc/cpuinfo's text, or "" where there is none (macOS, Windows)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return Path("/proc/cpuinfo").read_text()
    return ""


def cpu_name() -> str:
    """The CPU's model name, with its family and model numbers where /proc/cpuinfo has them: a virtual machine may
    call its CPU only 'AMD EPYC', and two generations with the same flags run at different speeds."""
    fields: dict[str, str] = {}
    for line in cpuinfo().splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or "CPU"
    if "cpu family" in fields and "model" in fields:
        name += f", family {fields['cpu family']} model {fields['model']}"
    return name


def cpu_identity() -> str:
    """The architecture, model name and flags of this CPU: what native code built here (-march=native, the
    inductor's vector width) depends on, for caches of such code to key on."""
    return " ".join([platform.machine(), cpu_name(), *sorted(cpu_flags())])


def describe_hardware(device: torch.device) -> str:
    """What results files record as the hardware: the GPU, or the CPU with the flags that decide its speed."""
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "Apple MPS"
    flags = [f for f in REPORTED_FLAGS if f in cpu_flags()]
    return f"{cpu_name()} ({' '.join(flags) or 'flags unknown'}), {torch.get_num_threads()} threads"


CPU_CLASSES = (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512f", "avx512"), ("avx2", "avx2"),
               ("bf16", "arm-bf16"), ("asimd", "arm"))  # the first flag found names the class


def hardware_tag(device: torch.device) -> str:
    """A short file-name tag for the class of machine a measurement speaks for: 'cpu-avx2', 'cpu-avx512bf16',
    'cuda-nvidia-h200', 'mps'. The benchmark names its results by it, so a run on one kind of machine never
    overwrites another kind's figures: the targets differ between them (bf16 native or emulated)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_properties(device).name.lower()
        return "cuda-" + "-".join("".join(ch if ch.isalnum() else " " for ch in name).split())
    if device.type == "mps":
        return "mps"
    flags = cpu_flags()
    return "cpu-" + next((tag for flag, tag in CPU_CLASSES if flag in flags), "other")


def benchmark_record_name(device: torch.device, quick: bool) -> str:
    """The file stem of the benchmark's record on this kind of machine: 'benchmark_cpu-avx2', 'benchmark_quick_mps'
    (results/<stem>.json, images/<stem>.png)."""
    return f"benchmark{'_quick' if quick else ''}_{hardware_tag(device)}"


def native_bf16(flags: set[str]) -> str | None:
    """The name of the CPU feature that runs bf16 matmuls natively, or None."""
    return next((name for flag, name in NATIVE_BF16_FLAGS.items() if flag in flags), None)


@functools.cache
def bf16_matmul_speedup(n: int = 256, runs: int = 3) -> float:
    """bf16 over fp32 matmul throughput on this CPU, from the best of a few n x n products (~0.1 s where bf16 is
    emulated, a few ms where it is native). Measured once per process."""
    def best(dtype: torch.dtype) -> float:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return min(times)
    return best(torch.float32) / best(torch.bfloat16)


# ----------------------------------------------------------------------------- precision

@dataclass(frozen=True)
class Precision:
    """A precision and why it was chosen: `dtype` is fp32 | bf16 | fp16, `reason` one sentence for logs and records."""

    dtype: str
    reason: str


def cpu_bf16_reason() -> tuple[bool, str]:
    """(whether bf16 is fast on this CPU, why): an x86 CPU's AVX512_BF16 or AMX-BF16 flag says so (PyTorch's
    oneDNN runs bf16 matmuls with them); otherwise a measured probe decides. Arm's BF16 flag only says the
    instructions exist: whether PyTorch's build uses them (its Linux wheels' Arm kernels, or macOS's, whose fp32
    matmuls go to Apple's Accelerate instead) is not in the flags, so there the probe decides too."""
    flags = cpu_flags()
    feature = native_bf16(flags)
    if feature and feature != NATIVE_BF16_FLAGS["bf16"]:
        return True, f"this CPU has {feature}: native bf16 matmuls"
    speedup = bf16_matmul_speedup()
    where = (f"{feature}" if feature else "no AVX512_BF16 or AMX-BF16 flag") if flags else "its flags could not be read"
    if speedup >= PROBE_SPEEDUP:
        return True, f"this CPU has {where}, but a measured bf16 matmul ran {speedup:.1f}x faster than fp32"
    return False, f"this CPU has {where}, and a measured bf16 matmul ran at {speedup:.2f}x the speed of fp32"


def resolve_dtype(requested: str, device: torch.device) -> Precision:
    """The training precision for a device ("auto"), or the user's choice checked.

    - CUDA: bf16 autocast where the GPU supports it (Ampere+), else fp16 with a GradScaler.
    - MPS: fp32; fp16 autocast without a GradScaler diverged there in the original project.
    - CPU: bf16 autocast where bf16 matmuls are native (see `cpu_bf16_reason`), else fp32. fp16 is refused.
    """
    requested = (requested or "auto").lower()
    if requested not in ("auto", *DTYPES):
        raise UserError(f"unknown --dtype {requested!r}; choose auto, fp32, bf16 or fp16")
    if requested == "fp16" and device.type != "cuda":
        raise UserError(f"--dtype fp16 is not supported on {device.type} (it needs a GradScaler, which only "
                        "CUDA has); use --dtype fp32 or bf16")
    if requested != "auto":
        return Precision(requested, f"--dtype {requested} asked for")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "auto: this GPU supports bf16")
        return Precision("fp16", "auto: this GPU has no bf16, so fp16 with a loss scaler")
    if device.type == "mps":
        return Precision("fp32", "auto: fp32 on MPS (fp16 autocast without a loss scaler diverged there)")
    fast, why = cpu_bf16_reason()
    return Precision("bf16" if fast else "fp32", f"auto: {why}")


def autocast(device: torch.device, dtype: str):
    """Mixed-precision context for the forward pass; a no-op for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


# ----------------------------------------------------------------------------- compiling the training step

@dataclass(frozen=True)
class Compile:
    """Whether the training step runs torch.compile'd, and why (one sentence for logs and records)."""

    enabled: bool
    reason: str


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (the inductor) would build its kernels with, or None."""
    return next((cxx for cxx in (os.environ.get("CXX"), "g++", "clang++", "c++") if cxx and shutil.which(cxx)), None)


def resolve_compile(requested: str, device: torch.device, max_steps: int, world: int = 1,
                    fusible: tuple[str, ...] = (), max_time: float = 0.0) -> Compile:
    """Compile the training step or not ("auto"), or the user's "on"/"off".

    What compiling buys on a CPU: the inductor fuses chains of element-wise ops into generated loops, where eager
    PyTorch makes a pass over the activations per op. The modern components are such chains on a CPU (`fusible`:
    RMSNorm, RoPE's rotation, SwiGLU's gate); GPT-2's LayerNorm and ReLU are single eager kernels already, and the
    vanilla model gained nothing compiled (the benchmark's rows; an A/B of its `--preset cpu` run, DEVLOG section 5).
    Compiling costs a warm-up (tens of seconds on a 2-core CPU) before the first step, and the warm-up runs on the
    clock of a run with a time limit. So `auto` compiles a single-process CPU run of at least COMPILE_MIN_STEPS
    steps (and, if it has a `max_time`, of at least COMPILE_MIN_SECONDS) of a model with fusible components, where
    a C++ compiler is found; tests, the demo, short or time-boxed experiments and the vanilla model stay eager.
    training/benchmark.py times the default step against the eager one (DEVLOG section 5). CUDA and MPS stay eager
    under auto until a run there measures it, and so do multi-process (torchrun) runs.
    """
    requested = (requested or "auto").lower()
    if requested not in ("auto", "on", "off"):
        raise UserError(f"unknown --compile {requested!r}; choose auto, on or off")
    if requested != "auto":
        return Compile(requested == "on", f"--compile {requested} asked for")
    if device.type != "cpu":
        return Compile(False, f"auto: compiling is not measured on {device.type} yet (--compile on)")
    if world > 1:
        return Compile(False, "auto: compiling is measured for one process only, not under torchrun")
    if not fusible:
        return Compile(False, "auto: no RMSNorm, RoPE or SwiGLU, nothing the compiler fuses")
    if max_steps < COMPILE_MIN_STEPS:
        return Compile(False, f"auto: a run of {max_steps} steps, under {COMPILE_MIN_STEPS}: the compiler's warm-up "
                              "would not pay")
    if 0 < max_time < COMPILE_MIN_SECONDS:
        return Compile(False, f"auto: a run capped at {max_time:g} s, under {COMPILE_MIN_SECONDS:g}: the compiler's "
                              "warm-up would use up much of it")
    compiler = cpp_compiler()
    if compiler is None:
        return Compile(False, "auto: no C++ compiler here for torch.compile's CPU kernels")
    return Compile(True, f"auto: a CPU run of {max_steps} steps fusing {', '.join(fusible)} ({compiler} here)")


def compile_cache_for_this_cpu() -> None:
    """Keep the inductor's cache (TORCHINDUCTOR_CACHE_DIR, by default /tmp/torchinductor_<user>) in a folder of
    this CPU's own, unless the user chose one.

    Why: torch keys a cached graph's generated C++ on the graph, not on the CPU's vector instructions, and compiles
    it again for the CPU it finds. Where one folder outlives a change of CPU (a virtual machine restarted on another
    host, a disk moved to another instance type), C++ generated for one vector width is built for another (16-float
    AVX-512 vectors as 8-float AVX2 ones, or the reverse): it reads and writes past its buffers, and the process
    computes garbage or dies ("malloc(): unaligned tcache chunk detected"). One folder per CPU (its flags, and
    ATEN_CPU_CAPABILITY, which overrides the vector width torch picks) costs one fresh compile after such a change."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # importing torch._dynamo (torch.compile, a dropout layer's first call) sets the variable to torch's default
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        return  # the user's folder
    tag = hashlib.sha256(f"{cpu_identity()} {os.environ.get('ATEN_CPU_CAPABILITY', '')}".encode()).hexdigest()[:12]
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(default_cache_dir(), f"cpu-{tag}")


def torch_compile(fn, **options):
    """torch.compile(fn, **options), its generated code cached for this CPU (`compile_cache_for_this_cpu`)."""
    compile_cache_for_this_cpu()
    return torch.compile(fn, **options)


# ----------------------------------------------------------------------------- memory

class ProcessMemoryCounters(ctypes.Structure):
    """Windows' PROCESS_MEMORY_COUNTERS (psapi.h): 72 bytes on 64-bit Windows, 40 on 32-bit."""
    _fields_ = [("cb", ctypes.c_uint32), ("PageFaultCount", ctypes.c_uint32),
                *((name, ctypes.c_size_t) for name in (
                    "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage", "QuotaPagedPoolUsage",
                    "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage"))]


def windows_peak_working_set() -> int:
    """Windows has no `resource` module: its peak resident memory is the peak working set that kernel32 reports."""
    kernel32 = ctypes.WinDLL("kernel32")
    kernel32.GetCurrentProcess.restype = ctypes.c_void_p
    kernel32.K32GetProcessMemoryInfo.argtypes = [ctypes.c_void_p, ctypes.POINTER(ProcessMemoryCounters),
                                                 ctypes.c_uint32]
    counters = ProcessMemoryCounters(cb=ctypes.sizeof(ProcessMemoryCounters))
    if not kernel32.K32GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.cb):
        raise ctypes.WinError()
    return counters.PeakWorkingSetSize


def peak_resident_bytes() -> int:
    """This process's own peak resident memory. Linux: VmHWM, since ru_maxrss also counts the parent's pages at
    the fork before an exec (a benchmark that starts a fresh process per task would read its own size there)."""
    if sys.platform == "win32":
        return windows_peak_working_set()
    try:
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    except OSError:  # no /proc (macOS): ru_maxrss, in bytes there and KiB elsewhere
        import resource  # Unix only
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD_MAX = 32 << 20  # the largest mmap threshold glibc accepts on a 64-bit system
NO_TRIM = 2**31 - 1  # mallopt takes an int


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep the memory PyTorch frees on a CPU and hand it out again, for the rest of the
    process. True where it did (Linux with glibc); elsewhere nothing changes.

    Why: a training step allocates its activations and gradients afresh, a few hundred MB at the reference size,
    and frees them by its end. By glibc's defaults, blocks above its mmap threshold get pages of their own from the
    kernel and give them back on free, and free space at the top of the heap is returned too; either way the next
    step writes to fresh pages, each a page fault in which the kernel maps and zeroes 4 KiB: tens of thousands of
    faults a step at the reference size. With the threshold at its maximum and trimming off, freed blocks are
    reused and a step takes next to none. The cost: the process keeps its peak size until it exits, which a training
    run reaches at every step anyway. training/benchmark.py times nanoGPT's step with and without it (DEVLOG
    section 5). PyTorch's tuning guide gets the same effect by preloading jemalloc or tcmalloc."""
    try:
        libc = ctypes.CDLL(None)
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version  # the second exists in glibc only
    except (OSError, AttributeError, TypeError):  # TypeError: Windows cannot open the running program by None
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, NO_TRIM))
