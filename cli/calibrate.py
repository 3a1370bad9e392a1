"""`sysplan calibrate`: fit the cost model's free factors to measured steps, write an overlay.

The fitted values and the per-row errors go to stdout; the overlay profile to ``--output``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sysplan.cli.train import _opt

HELP = """Fit the cost model's free factors to measured training steps or serving runs.

MEASURED is a CSV with one row per run: model, gpus, global_batch, seq_len, step_time_s and
optionally tp, pp, vpp, dp, cp, ep, etp, micro_batch, zero, recompute, sequence_parallel,
precision, peak_memory_gib, label. The result is a profile overlay for --profile.

With --serving, MEASURED holds serving runs with the columns `vllm bench serve` and
trtllm-bench report: model, tp, input_len, output_len, num_requests, request_rate (inf:
offline) and at least one of output_throughput (tokens/s), mean_ttft_ms, mean_itl_ms;
optionally engine, pp, weights_precision, kv_precision, max_num_seqs,
max_num_batched_tokens, label. The overlay's serve_* factors replace the bundled ones in
`sysplan serve --profile`.

Examples: sysplan calibrate runs.csv --cluster dgx-h100 -o calibrated.yaml
          sysplan calibrate --serving serve_runs.csv --cluster dgx-h100 -o serving.yaml
"""

_Measured = Annotated[str, typer.Argument(
    metavar="MEASURED", help="CSV of measured runs.", show_default=False)]
_Cluster = Annotated[str, _opt(
    "--cluster", metavar="NAME|PATH", help="Cluster the runs ran on (catalog name or YAML).")]
_Profile = Annotated[str | None, _opt(
    "--profile", metavar="FILE|NAME",
    help="Profile to calibrate (default: the bundled profile of the cluster's GPU, if any).")]
_Output = Annotated[str, _opt(
    "--output", "-o", metavar="FILE", help="Overlay profile to write.")]
_Serving = Annotated[bool, _opt(
    "--serving", help="MEASURED holds serving runs: fit the serve_* factors.")]
_Engine = Annotated[str, _opt(
    "--engine", metavar="NAME", help="With --serving: engine of rows without an engine column "
    "(vllm, sglang, trtllm).")]


def calibrate(measured: _Measured, cluster: _Cluster, profile: _Profile = None,
              output: _Output = "calibrated.yaml", serving: _Serving = False,
              engine: _Engine = "vllm") -> None:
    """Fit, print the fit, write the overlay."""
    if serving:
        _calibrate_serving(measured, cluster, profile, output, engine)
        return
    from sysplan.costmodels.efficiency import Efficiency
    from sysplan.hardware import load_cluster
    from sysplan.models import resolve_model
    from sysplan.planners.calibrate import fit_calibration, read_measured_csv
    from sysplan.profiles.loader import bundled_for_gpu, check_gpu, list_bundled, load_profile

    machine, _ = load_cluster(cluster)
    base = load_profile(profile) if profile else bundled_for_gpu(machine.gpu.name)
    if base is not None:
        check_gpu(base, machine.gpu, profile)
    eff = Efficiency.from_profile(base, machine) if base else Efficiency.default(machine)
    runs = read_measured_csv(Path(measured), resolve_model)
    fit = fit_calibration(runs, machine, eff, fitted_on=f"{Path(measured).name} "
                          f"({len(runs)} runs on {machine.name})")
    base_name = None
    if base is not None:
        base_name = profile if profile in list_bundled() or not profile else str(
            Path(profile).resolve())
        base_name = base_name or next(n for n in list_bundled()
                                      if load_profile(n).name == base.name)
    _write(Path(output), fit.calibration, base_name, machine)
    _print(fit, eff.name, output)


def _calibrate_serving(measured: str, cluster: str, profile: str | None, output: str,
                       engine: str) -> None:
    """Fit the serving factors to measured serving runs; print them and each run's error."""
    from sysplan.cli.serve_run import serving_efficiency
    from sysplan.core.errors import InputError
    from sysplan.hardware import load_cluster
    from sysplan.models import resolve_model
    from sysplan.planners.calibrate_serving import (
        FACTORS,
        fit_serving,
        predict,
        read_serving_csv,
    )
    from sysplan.profiles.loader import bundled_for_gpu, list_bundled, load_profile

    if engine not in ("vllm", "sglang", "trtllm"):
        raise InputError(f"--engine {engine!r}: expected vllm, sglang or trtllm")
    machine, _ = load_cluster(cluster)
    eff = serving_efficiency(profile, machine)  # a bad --profile is an error before the fit
    runs = read_serving_csv(Path(measured), machine, resolve_model, engine)
    fitted = fit_serving(runs, f"{Path(measured).name} ({len(runs)} serving runs on "
                         f"{machine.name}, sysplan calibrate --serving)", efficiency=eff)
    base_name = None  # the overlay keeps the tables it was fitted with
    if profile and profile != "none":
        base_name = profile if profile in list_bundled() else str(Path(profile).resolve())
    elif profile is None and (bundled := bundled_for_gpu(machine.gpu.name)) is not None:
        base_name = next(n for n in list_bundled() if load_profile(n).name == bundled.name)
    _write(Path(output), fitted, base_name, machine)
    console = Console(highlight=False)
    console.print(f"calibrated the serving factors on {len(runs)} runs -> {output}")
    factors = Table("factor", "fitted", box=None, pad_edge=False)
    for name in FACTORS:
        factors.add_row(name, f"{getattr(fitted, name):.4g}")
    console.print(factors)
    rows = Table("run", "metric", "measured", "before", "after", box=None, pad_edge=False)
    errors: dict[str, list[float]] = {"before": [], "after": []}
    for run in runs:
        before, after = predict(run, efficiency=eff), predict(run, fitted, eff)
        for key, truth in run.measured.items():
            errors["before"].append(abs(before[key] / truth - 1))
            errors["after"].append(abs(after[key] / truth - 1))
            rows.add_row(run.label, key, f"{truth:.4g}", _err(before[key], truth),
                         _err(after[key], truth))
    console.print(rows)
    console.print(f"MAPE before {sum(errors['before']) / len(errors['before']):.1%}, after "
                  f"{sum(errors['after']) / len(errors['after']):.1%} (in sample: judge the "
                  "factors on runs they did not see)")


def _write(path: Path, calibration, base_name: str | None, machine) -> None:
    from sysplan.profiles.loader import write_profile
    from sysplan.profiles.schema import SCHEMA_VERSION, Device, Profile

    device = None if base_name else Device(
        name=machine.gpu.name, gpu=machine.gpu.name,
        date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        notes="calibration only: no measured tables, the defaults price every term")
    rounded = {k: float(f"{v:.4g}") for k, v in calibration.model_dump().items()
               if isinstance(v, float)}  # serve_* None stays None
    overlay = Profile(schema_version=SCHEMA_VERSION, name=f"{path.stem}", device=device,
                      base=base_name, calibration=calibration.model_copy(update=rounded))
    write_profile(overlay, path)


def _print(fit, base: str, output: str) -> None:
    console = Console(highlight=False)
    factors = Table("factor", "fitted", box=None, pad_edge=False)
    for name, value in fit.calibration.model_dump().items():
        if isinstance(value, float):
            factors.add_row(name, f"{value:.3f}")
    console.print(f"calibrated {base} -> {output}")
    console.print(factors)
    rows = Table("run", "measured s", "before", "after", "left out", box=None, pad_edge=False)
    for r in fit.rows:
        rows.add_row(r.label, f"{r.measured_s:.3f}", _err(r.before_s, r.measured_s),
                     _err(r.after_s, r.measured_s), _err(r.left_out_s, r.measured_s))
    console.print(rows)
    console.print(f"MAPE before {fit.mape('before_s'):.1%}, after {fit.mape('after_s'):.1%}, "
                  f"leave-one-out {fit.mape('left_out_s'):.1%}")


def _err(predicted: float, measured: float) -> str:
    return f"{predicted:.3f} ({predicted / measured - 1:+.1%})"
