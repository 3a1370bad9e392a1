"""Launch scripts shared by the exporters: torchrun on one node, Slurm ``srun`` across nodes.

A script sets the environment the estimate assumed, lists the runtime's arguments in a bash
array (one flag per line, so a diff between two plans reads well), and starts one process per
GPU. On one node it uses ``torchrun``; across nodes it is an ``sbatch`` script whose ``srun``
starts one task per GPU and exports the rendezvous variables torch.distributed reads
(``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``). On Frontier it
adds the ROCm/RCCL and Slingshot environment OLCF documents.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from sysplan.exporters.base import ExportRequest, comment_block


@dataclass(frozen=True)
class Script:
    """What a launch script runs: the program, its arguments and its environment."""

    runtime: str
    program: tuple[str, ...]  # e.g. ("$MEGATRON_DIR/pretrain_gpt.py",) or ("-m", "torchtitan.train")
    arguments: tuple[str, ...]
    environment: tuple[tuple[str, str, str], ...] = ()  # (name, value, why)
    preamble: tuple[str, ...] = ()  # bash lines before the environment (checkout variables)
    launcher: str = "torchrun"  # "torchrun" or "deepspeed" on one node


#: Frontier (OLCF): modules and variables of the OLCF PyTorch guide (olcf-user-docs
#: software/analytics/pytorch_frontier.rst, 2026-07): ROCm + the RCCL network plugin for
#: Slingshot, MIOpen caches on node-local /tmp, RCCL on the high-speed NICs.
FRONTIER_MODULES = (
    ("module load PrgEnv-gnu/8.7.0 cpe/26.03 miniforge3/23.11.0-0 rocm/7.1.1 rccl-net-plugin "
    "craype-accel-amd-gfx90a  # OLCF PyTorch guide, batch script"),
    "export LD_LIBRARY_PATH=$CRAY_LD_LIBRARY_PATH:$LD_LIBRARY_PATH  # non-default CPE (same)",
)
FRONTIER_ENVIRONMENT = (
    ("NCCL_SOCKET_IFNAME", "hsn0,hsn1,hsn2,hsn3", ("RCCL on the Slingshot NICs (OLCF guide; "
     "use hsn0 alone if it hangs)")),
    ("MIOPEN_USER_DB_PATH", "/tmp/miopen-cache-$SLURM_JOB_ID", ("MIOpen cache on node-local "
     "/tmp avoids disk I/O errors (OLCF guide)")),
    ("MIOPEN_CUSTOM_CACHE_DIR", "$MIOPEN_USER_DB_PATH", "same (OLCF guide)"),
    ("OMP_NUM_THREADS", "7", "the 7 cores per GCD srun -c7 gives each rank"),
)


def is_frontier(request: ExportRequest) -> bool:
    """Whether the plan's cluster is OLCF Frontier (by name or by its MI250X GCDs)."""
    return "frontier" in request.cluster.name.lower()


def script_text(request: ExportRequest, script: Script) -> str:
    """The bash launch script for ``script`` on the plan's nodes."""
    slurm = request.nodes > 1 or is_frontier(request)
    lines = ["#!/usr/bin/env bash"]
    lines += comment_block(request, script.runtime).splitlines()
    if slurm:
        lines += _sbatch_header(request)
    lines += ["", "set -euo pipefail", *script.preamble, ""]
    if is_frontier(request):
        lines += [*FRONTIER_MODULES, ""]
    environment = list(script.environment)
    if is_frontier(request):
        environment += FRONTIER_ENVIRONMENT
    for name, value, why in environment:
        lines.append(f"export {name}={_bash_value(value)}  # {why}")
    if environment:
        lines.append("")
    lines += ["ARGS=("]
    lines += [f"  {line}" for line in _argument_lines(script.arguments)]
    lines += [")", ""]
    lines += _srun_lines(request, script) if slurm else _single_node_lines(request, script)
    return "\n".join(lines) + "\n"


def _bash_value(value: str) -> str:
    """Quote a value for bash, keeping ``$VAR`` references live."""
    plain = value.replace("_", "").replace("-", "").replace(".", "").replace("/", "")
    return value if plain.replace(",", "").isalnum() else '"' + value.replace('"', '\\"') + '"'


def _argument_lines(arguments: tuple[str, ...]) -> list[str]:
    """One ``--flag value...`` group per line, values quoted for bash."""
    groups: list[list[str]] = []
    for token in arguments:
        if token.startswith("--") or not groups or token in SPLIT_VARIABLES:
            groups.append([token])
        else:
            groups[-1].append(token)
    return [" ".join(_quote(t) for t in group) for group in groups]


#: Variables holding several arguments: left unquoted so bash splits them.
SPLIT_VARIABLES = ("$DATA_ARGS",)


def _quote(token: str) -> str:
    """Shell-quote a token; ``$VAR`` references stay live (double quotes)."""
    if token in SPLIT_VARIABLES:
        return token
    return f'"{token}"' if token.startswith("$") else shlex.quote(token)


def _sbatch_header(request: ExportRequest) -> list[str]:
    gpus = request.gpus_per_node
    header = [
        f"#SBATCH --nodes={request.nodes}",
        f"#SBATCH --ntasks-per-node={gpus}",
        f"#SBATCH --gpus-per-node={gpus}",
        "#SBATCH --time=02:00:00",
        "#SBATCH --job-name=sysplan",
    ]
    if is_frontier(request):
        # the RCCL plugin's alternative rendezvous protocol (OLCF PyTorch guide)
        header.append("#SBATCH --network=disable_rdzv_get")
    return header


def _single_node_lines(request: ExportRequest, script: Script) -> list[str]:
    program = " ".join(_quote(t) for t in script.program)
    gpus = request.gpus_per_node
    if script.launcher == "deepspeed":
        return [f'deepspeed --num_gpus {gpus} {program} "${{ARGS[@]}}" "$@"']
    return [f'torchrun --standalone --nproc-per-node {gpus} {program} "${{ARGS[@]}}" "$@"']


def _srun_lines(request: ExportRequest, script: Script) -> list[str]:
    """srun: one task per GPU; each task exports the torch.distributed rendezvous variables.

    On Frontier each task is bound to its closest GCD and sees only it (LOCAL_RANK 0), with 7
    cores, as the OLCF PyTorch guide prescribes (torchrun there pins every rank to one core).
    """
    program = " ".join(_quote(t) for t in script.program)
    tasks = f"--nodes={request.nodes} --ntasks-per-node={request.gpus_per_node}"
    if is_frontier(request):
        master = ["MASTER_ADDR=$(hostname -i)  # this script runs on the first node",
                  "export MASTER_ADDR",
                  "export MASTER_PORT=${MASTER_PORT:-3442}  # OLCF's recommended port",
                  (f"export NCCL_NET={'OFI' if request.nodes > 1 else 'Socket'}  # fail if the "
                  "RCCL plugin did not load (OLCF guide)")]
        binding, local_rank = " -c7 --gpus-per-task=1 --gpu-bind=closest", "0"
    else:
        master = ['MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                  "export MASTER_ADDR", "export MASTER_PORT=${MASTER_PORT:-29500}"]
        binding, local_rank = "", "$SLURM_LOCALID"
    return master + [
        "",
        (f"srun {tasks}{binding} bash -c '"
        f"export RANK=$SLURM_PROCID LOCAL_RANK={local_rank} WORLD_SIZE=$SLURM_NTASKS; "
        f"exec python \"$@\"' python {program} \"${{ARGS[@]}}\" \"$@\""),
    ]
