"""`sysplan profile`: measure this node with torch and write a profile (and, on a CPU, a cluster).

The written paths and a few headline numbers go to stdout (they are the result); a progress
bar (on a terminal only) and notes go to stderr.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sysplan.cli import render
from sysplan.cli.output import Quiet
from sysplan.cli.train import MAX_GPUS, _choice, _gpu_count, _opt, whole_number

HELP = """Measure this node (GEMMs, attention, bandwidth, eager ops, collectives); write a profile.

On a CPU it also writes a cluster file, so `sysplan train --cluster local-cpu.yaml` plans for
this machine. Needs torch (pip install -e '.[torch]').

Example: sysplan profile --quick -o my-node.yaml
"""

_Device = Annotated[str, _opt(
    "--device", metavar="[auto|cuda|cpu]", parser=_choice("auto", "cuda", "cpu"),
    help="What to measure: auto is the GPUs when torch sees one (ROCm counts as cuda).")]
_Quick = Annotated[bool, _opt(
    "--quick", help="A short sweep (well under 2 minutes on a 2-core CPU).")]
_Model = Annotated[str | None, _opt(
    "--model", metavar="NAME|PATH", help="Time the layer GEMMs and the block's eager element-wise "
    "ops of this model (catalog name or config.json) instead of the standard sweep.")]
_Tp = Annotated[str, _opt(
    "--tp", metavar="LIST", help="Tensor-parallel degrees whose --model GEMM shapes to time "
    "(comma-separated, e.g. 1,2,4,8).")]
_World = Annotated[int | None, _opt(
    "--world", metavar="N", parser=_gpu_count, help="Processes (devices) the collectives "
    "span (default: every GPU, or min(cores, 4) CPU processes, at least 2).")]
_Output = Annotated[str | None, _opt(
    "--output", "-o", metavar="FILE", help="Profile file to write (default: profile-cpu.yaml "
    "or profile-gpu.yaml; .json writes JSON).")]
_Force = Annotated[bool, _opt(
    "--force", help="Replace an existing cluster file (a CPU profile writes local-cpu.yaml "
    "beside the profile; it is never replaced without this).")]
_ClusterOutput = Annotated[str | None, _opt(
    "--cluster-output", metavar="FILE", help="CPU only: the cluster file to write (default: "
    "local-cpu.yaml beside the profile).")]


def profile(
    device: _Device = "auto",
    quick: _Quick = False,
    model: _Model = None,
    tp: _Tp = "1",
    world: _World = None,
    output: _Output = None,
    cluster_output: _ClusterOutput = None,
    force: _Force = False,
    quiet: Quiet = False,
) -> None:
    """Measure this node and write a profile."""
    err = Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)
    written = measure_and_write(err, device=device, quick=quick, model=model, tp=tp,
                                world=world, output=output, cluster_output=cluster_output,
                                force=force)
    if written is not None:
        print_summary(*written)


def measure_and_write(err: Console, *, device: str = "auto", quick: bool = False,
                      model: str | None = None, tp: str = "1", world: int | None = None,
                      output: str | None = None, cluster_output: str | None = None,
                      force: bool = False):
    """Measure this node (progress and notes on ``err``) and write the profile, and on a CPU
    its cluster file: (profile, path, cluster path or None), or None on ranks other than 0.
    An existing cluster file is never replaced without ``force`` (checked before measuring).
    ``sysplan run`` calls it for a quick profile when none is given."""
    from sysplan.core.errors import InputError
    from sysplan.profiles.device import memory_bytes
    from sysplan.profiles.loader import write_atomic, write_profile
    from sysplan.profiles.measure import (
        MeasureRequest,
        import_torch,
        measure_node,
        resolve_device,
    )
    from sysplan.profiles.summary import local_cpu_cluster_yaml

    request = MeasureRequest(device=device, quick=quick, model=model, tp=parse_tp(tp),
                             world=world)
    if resolve_device(device, import_torch()) == "cpu" and not force:
        planned = Path(cluster_output) if cluster_output else \
            Path(output or "profile-cpu.yaml").with_name("local-cpu.yaml")
        if planned.exists():
            raise InputError(f"{planned} exists: a CPU profile also writes a cluster file, and "
                             "sysplan never replaces one silently; accepted: --force to replace "
                             "it, or --cluster-output NEW.yaml")
    with _progress(err) as bar:
        result = measure_node(request, progress=bar)
    if result.rank != 0:  # under torchrun/srun only rank 0 writes
        return None
    for note in result.notes:
        err.print(f"note: {note}", markup=False)
    measured = result.profile
    assert measured.device is not None
    path = Path(output or f"profile-{measured.device.kind}.yaml")
    cluster_path = None
    if measured.device.kind == "cpu":
        cluster_path = Path(cluster_output) if cluster_output else path.with_name("local-cpu.yaml")
        write_atomic(cluster_path, local_cpu_cluster_yaml(measured, memory_bytes(),
                                                          name=cluster_path.stem))
    elif cluster_output:
        err.print("note: --cluster-output ignored: only a CPU profile writes a cluster file")
    write_profile(measured, path)
    return measured, path, cluster_path


def parse_tp(text: str) -> tuple[int, ...]:
    """``1,2,4,8`` as whole numbers of at least 1; InputError naming a bad entry."""
    from sysplan.core.errors import InputError

    degrees = []
    for part in text.split(","):
        degree = whole_number(part) if "," not in part and "_" not in part else None
        if degree is None or not 1 <= degree <= MAX_GPUS:
            raise InputError(f"--tp {text}: {part.strip()!r} is not a whole number from 1 to "
                             f"{MAX_GPUS:,} (write e.g. 1,2,4,8)")
        degrees.append(degree)
    return tuple(sorted(set(degrees)))


def print_summary(measured, path: Path, cluster_path: Path | None) -> None:
    """What was written and the headline numbers, against the datasheet where there is one."""
    from sysplan.hardware import load_gpu
    from sysplan.profiles.summary import (
        best_gemm,
        copy_bandwidth,
        eager_line,
        largest_bus_bandwidths,
    )

    device = measured.device
    tables = ", ".join(f"{name} {len(getattr(measured, name).rows)}" for name in measured.tables)
    typer.echo(f"wrote {path}: {measured.name} ({device.name}, {device.count} devices; "
               f"rows: {tables})")
    if cluster_path is not None:
        typer.echo(f"wrote {cluster_path}: {device.count} CPU processes as a cluster "
                   f"(sysplan train --cluster {cluster_path} --gpus {device.count})")
    datasheet = load_gpu(device.gpu) if device.gpu else None
    missing = "a CPU has no datasheet" if device.kind == "cpu" else \
        f"{device.name} is not in the GPU catalog: no datasheet"
    if measured.gemm is not None:
        rate, (m, n, k) = best_gemm(measured.gemm)
        peak = datasheet.peak_flops.get(measured.gemm.dtype) if datasheet else None
        versus = f"{render.percent(rate / peak)} of the {datasheet.name} datasheet " \
            f"({render.flop_rate(peak)})" if peak else missing
        typer.echo(f"GEMM: best {render.flop_rate(rate)} {measured.gemm.dtype} at "
                   f"{m}x{n}x{k}; {versus}")
    copy = copy_bandwidth(measured.memory) if measured.memory is not None else None
    if copy is not None:
        versus = f"{render.percent(copy / datasheet.hbm_bandwidth_bytes_per_s)} of the " \
            f"datasheet {render.bandwidth(datasheet.hbm_bandwidth_bytes_per_s)}" \
            if datasheet else missing
        typer.echo(f"copy: {render.bandwidth(copy)}; {versus}")
    if measured.overhead is not None:
        typer.echo(f"per-op overhead: {measured.overhead.forward_s * 1e6:.1f} us forward, "
                   f"{measured.overhead.backward_s * 1e6:.1f} us backward (a one-element "
                   "autograd op; charged per op of every layer)")
    if measured.eager is not None:
        typer.echo(f"eager element-wise chain of one block: {eager_line(measured.eager)}")
    for processes, slowdown in measured.contention or ():
        typer.echo(f"contention: {processes} processes computing side by side each run "
                   f"{slowdown:.2f}x as long as one alone (sysplan run prices it)")
    if measured.collectives is not None:
        for bus in largest_bus_bandwidths(measured.collectives):
            typer.echo(f"{bus.op}: bus bandwidth {render.bandwidth(bus.bytes_per_s)} at "
                       f"{render.size(bus.message_bytes)} over {bus.group_size} devices "
                       f"({bus.tier})")


@contextmanager
def _progress(err: Console) -> Iterator[Callable[[str, int, int], None] | None]:
    """Progress on stderr, yielding the callback measure_node takes: a bar with counts and
    an ETA on a terminal, else one log line per table measured (a pipe or a CI log)."""
    if not err.is_terminal:
        started = time.perf_counter()
        last: list[str] = []

        def log(step: str, done: int, total: int) -> None:
            if not last or last[0] != step:
                last[:] = [step]
                err.print(f"profile: measuring {step} ({total:,} cases; "
                          f"{time.perf_counter() - started:.0f} s so far)", markup=False)

        yield log
        return
    with Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("measuring", total=None)
        yield lambda step, done, total: bar.update(task, description=step, completed=done,
                                                   total=total)
