"""Turn a folder of op-level measurements (gemm.csv, attention.csv, env.json, as in
``shared/data/measured/h100``) into a sysplan profile.

This is how the bundled H100 profile was made and how it is remade (an existing file's
``calibration`` block, fitted separately, is kept):

    python -m sysplan.profiles.convert_measured ../shared/data/measured/h100 \\
        --gpu H100-SXM -o profiles/bundled/h100-sxm.yaml
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from sysplan.profiles.loader import load_profile, write_profile
from sysplan.profiles.schema import (
    SCHEMA_VERSION,
    AttentionTable,
    Device,
    GemmTable,
    MemoryTable,
    Profile,
)

MS = 1e-3


def _seconds(milliseconds: str | float) -> float:
    """Milliseconds as seconds, to the 6 significant digits a timing carries."""
    return float(f"{float(milliseconds) * MS:.6g}")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return [row for row in csv.DictReader(stream) if row.get("status", "ok") == "ok"]


def gemm_table(path: Path) -> GemmTable:
    """Every measured pass (fwd, dgrad, wgrad) as the GEMM it ran: (gemm_m, gemm_n, gemm_k)."""
    points = {}
    for row in _rows(path):
        shape = (int(row["gemm_m"]), int(row["gemm_n"]), int(row["gemm_k"]))
        points.setdefault(shape, []).append(_seconds(row["time_ms"]))
    rows = tuple((*shape, sorted(times)[len(times) // 2]) for shape, times in sorted(points.items()))
    return GemmTable(dtype="bf16", rows=rows)


def attention_table(path: Path) -> AttentionTable:
    """Forward and backward (fwd+bwd minus fwd) time per backend, batch x heads and length."""
    rows = tuple(
        (row["backend"], int(row["batch"]) * int(row["heads"]), int(row["seq"]),
         int(row["head_dim"]), row["causal"] == "1", _seconds(row["fwd_ms"]),
         _seconds(row["bwd_ms"]))
        for row in _rows(path))
    return AttentionTable(rows=rows)


def convert(folder: Path, gpu: str, name: str | None = None) -> Profile:
    """The profile of one measured folder."""
    env = json.loads((folder / "env.json").read_text(encoding="utf-8"))
    smi = env.get("nvidia_smi_query", {})
    copy_bytes = 2 * 4 * 2**30  # a 4 GiB buffer read and written once
    memory = MemoryTable(rows=(("copy", copy_bytes, _seconds(env["copy_4GiB_ms_median"])),))
    device = Device(
        name=env["device_name"], gpu=gpu, driver=smi.get("driver_version", ""),
        runtime=f"CUDA {env.get('torch_cuda', '')}", torch=env.get("torch", ""),
        date=env["date_utc"],
        notes=(f"power limit {smi.get('power.limit [W]', '?')}, max SM clock "
               f"{smi.get('clocks.max.sm [MHz]', '?')}; clocks throttle under dense load, as "
               "in a real run (measured/h100/README.md)"),
    )
    return Profile(
        schema_version=SCHEMA_VERSION, name=name or f"{gpu.lower()}-{env['date_utc'][:10]}",
        device=device, gemm=gemm_table(folder / "gemm.csv"),
        attention=attention_table(folder / "attention.csv"), memory=memory,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--gpu", required=True, help="catalog GPU name the device is")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    profile = convert(args.folder, args.gpu)
    if args.output.exists():
        # keep the calibration block an earlier fit wrote into the bundled file
        previous = load_profile(args.output)
        profile = profile.model_copy(update={"calibration": previous.calibration})
    write_profile(profile, args.output)
    print(args.output)


if __name__ == "__main__":
    main()
