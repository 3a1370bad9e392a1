"""Which machine this is: CPU or GPU name, catalog GPU, core count, the profile's Device block.

torch is passed in by the caller (imported there, inside a function), never imported here.
"""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from typing import Any

from sysplan.profiles.schema import Device

#: Driver names (regular expressions) of the catalog GPUs, most specific first.
_CATALOG_NAMES = (
    (r"H100.*PCIe", "H100-PCIe"),
    (r"H100.*96GB", "H100-SXM-96GB-500W"),
    (r"H100", "H100-SXM"),
    (r"H200", "H200"),
    (r"GB200", "GB200"),
    (r"B200", "B200"),
    (r"A100.*40GB", "A100-SXM4-40GB"),
    (r"A100.*80GB", "A100-SXM4-80GB"),
    (r"MI250X?", "MI250X"),
    (r"MI300X", "MI300X"),
    (r"L40S", "L40S"),
)


def catalog_gpu(driver_name: str) -> str:
    """The catalog GPU a driver-reported name is (``NVIDIA H100 80GB HBM3`` -> H100-SXM), or ''."""
    from sysplan.hardware import list_gpus

    known = set(list_gpus())
    for pattern, name in _CATALOG_NAMES:
        if re.search(pattern, driver_name, re.IGNORECASE) and name in known:
            return name
    return ""


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def memory_bytes() -> int:
    """Physical memory of this machine (16 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 16 * 2**30


def default_world(kind: str, torch: Any) -> int:
    """Devices the collectives span: every GPU, or min(cores, 4) CPU processes (at least 2)."""
    if kind == "cuda":
        return torch.cuda.device_count()
    return max(2, min(cpu_cores(), 4))


def describe_device(kind: str, torch: Any, world: int, index: int = 0) -> Device:
    """The Device block: name, catalog GPU, count, runtime and the UTC time now."""
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "cpu":
        threads = max(1, cpu_cores() // world)
        return Device(name=cpu_name(), kind="cpu", count=world, runtime="cpu",
                      torch=torch.__version__, date=date,
                      notes=f"{world} processes of {threads} threads each (one device each); "
                            "fp32 GEMMs")
    name = torch.cuda.get_device_name(index)
    hip = getattr(torch.version, "hip", None)
    runtime = f"ROCm {hip}" if hip else f"CUDA {torch.version.cuda}"
    return Device(name=name, kind="gpu", gpu=catalog_gpu(name),
                  count=max(1, torch.cuda.device_count()), driver=_driver_version(),
                  runtime=runtime, torch=torch.__version__, date=date)


def _driver_version() -> str:
    """The NVIDIA driver version from nvidia-smi, or '' where there is none."""
    import subprocess

    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.splitlines()[0].strip() if done.returncode == 0 and done.stdout else ""



def profile_name(device: Device) -> str:
    """``cpu-<host>-<date>`` or ``<gpu>-<date>``: lower case, dashes, the UTC date."""
    label = f"cpu-{platform.node()}" if device.kind == "cpu" else (device.gpu or device.name)
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or device.kind
    return f"{slug}-{device.date[:10]}"
