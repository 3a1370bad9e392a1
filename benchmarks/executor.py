"""The reference executor's measured step times against the cost model's, on this machine.

    python benchmarks/executor.py [--profile profile-cpu.yaml --cluster local-cpu.yaml]
                                  [--steps 20] [--nproc 4]

Without --profile it first measures this node (`sysplan profile --device cpu --model` with
the decoder's config.json and TP 1, 2, 4, collectives over --nproc processes; a full run, not
--quick: the layouts' collectives fall between the three sizes a quick run times) into a
temporary folder. Every layout trains the same tiny decoder on the same data; per layout it
prints the measured median step (and p10-p90), the
prediction, its error, the naive baseline (6 N tokens at 40 % of the measured GEMM peak per
process, Kaplan et al. 2020) and per-term errors; then MAPE, and whether the two rankings
agree (Kendall's tau). Timings on a shared 2-core VM are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from scipy.stats import kendalltau

from sysplan.costmodels.efficiency import Efficiency
from sysplan.executor.layout import ExecLayout, RunCase
from sysplan.executor.model import TinyConfig
from sysplan.executor.predict import predict, tiny_model_spec
from sysplan.executor.runner import run_cases
from sysplan.hardware import load_cluster
from sysplan.models.counting import param_counts
from sysplan.profiles.device import cpu_cores
from sysplan.profiles.loader import load_profile

TINY = TinyConfig(vocab=256, hidden=128, layers=8, heads=8, kv_heads=4, ffn=512, seq_len=128)
BATCH = 16
LAYOUTS = {
    "single": ExecLayout(global_batch=BATCH, micro_batch=4),
    "dp2": ExecLayout(dp=2, global_batch=BATCH, micro_batch=4),
    "dp2 zero1": ExecLayout(dp=2, zero=1, global_batch=BATCH, micro_batch=4),
    "dp2 zero3": ExecLayout(dp=2, zero=3, global_batch=BATCH, micro_batch=4),
    "dp4 zero1": ExecLayout(dp=4, zero=1, global_batch=BATCH, micro_batch=2),
    "tp2": ExecLayout(tp=2, global_batch=BATCH, micro_batch=4),
    "tp2 sp": ExecLayout(tp=2, sequence_parallel=True, global_batch=BATCH, micro_batch=4),
    "tp4": ExecLayout(tp=4, global_batch=BATCH, micro_batch=4),
    "pp2 1f1b": ExecLayout(pp=2, global_batch=BATCH, micro_batch=2),
    "pp2 vpp2": ExecLayout(pp=2, vpp=2, schedule="interleaved", global_batch=BATCH,
                           micro_batch=2),
    "pp4 1f1b": ExecLayout(pp=4, global_batch=BATCH, micro_batch=2),
    "cp2": ExecLayout(cp=2, global_batch=BATCH, micro_batch=4),
    "tp2 pp2": ExecLayout(tp=2, pp=2, global_batch=BATCH, micro_batch=2),
    "dp2 tp2 zero1": ExecLayout(dp=2, tp=2, zero=1, global_batch=BATCH, micro_batch=4),
    "tp2 full recompute": ExecLayout(tp=2, recompute="full", global_batch=BATCH, micro_batch=4),
}


def _profile_paths(args) -> tuple[str, str]:
    if args.profile:
        return args.profile, args.cluster or str(Path(args.profile).with_name("local-cpu.yaml"))
    from sysplan.profiles.device import memory_bytes
    from sysplan.profiles.loader import write_atomic, write_profile
    from sysplan.profiles.measure import MeasureRequest, measure_node
    from sysplan.profiles.summary import local_cpu_cluster_yaml

    folder = Path(tempfile.mkdtemp(prefix="sysplan-bench-"))
    started = time.perf_counter()
    # the decoder it will run, as a config.json: the profile then times its own layer GEMMs
    # at every TP degree and its attention at its head dim, as `sysplan profile --model` does
    config = folder / "config.json"
    config.write_text(json.dumps({
        "model_type": "llama", "hidden_size": TINY.hidden, "num_attention_heads": TINY.heads,
        "num_key_value_heads": TINY.kv_heads, "intermediate_size": TINY.ffn,
        "num_hidden_layers": TINY.layers, "vocab_size": TINY.vocab,
        "max_position_embeddings": TINY.seq_len, "tie_word_embeddings": False}))
    degrees = tuple(d for d in (1, 2, 4) if d <= args.nproc)
    measured = measure_node(MeasureRequest(device="cpu", world=args.nproc,
                                           model=str(config), tp=degrees)).profile
    write_profile(measured, folder / "profile-cpu.yaml")
    write_atomic(folder / "local-cpu.yaml", local_cpu_cluster_yaml(measured, memory_bytes()))
    print(f"measured this node in {time.perf_counter() - started:.0f} s -> {folder}")
    return str(folder / "profile-cpu.yaml"), str(folder / "local-cpu.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile")
    parser.add_argument("--cluster")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--nproc", type=int, default=4)
    parser.add_argument("--layouts", help="comma-separated layout names (default: all)")
    args = parser.parse_args(argv)
    profile_path, cluster_path = _profile_paths(args)
    cluster, _ = load_cluster(cluster_path)
    efficiency = Efficiency.from_profile(load_profile(profile_path), cluster)
    wanted = set(args.layouts.split(",")) if args.layouts else set(LAYOUTS)
    names = [n for n, lay in LAYOUTS.items() if lay.world_size <= args.nproc and n in wanted]
    started = time.perf_counter()
    warmup = min(3, args.steps - 1)  # the first steps (allocator, gloo set-up) are not timed
    results = run_cases([RunCase(tiny=TINY, layout=LAYOUTS[n]) for n in names], args.steps,
                        warmup, max_procs=args.nproc)
    print(f"ran {len(names)} layouts x {args.steps} steps in {time.perf_counter() - started:.0f} s "
          f"({results[-1].backend}, {cpu_cores()} cores); priced on {cluster.name} with "
          f"{efficiency.name}")
    # naive: 6 N tokens at 40 % of the measured GEMM peak of every process (Kaplan 2020)
    params = param_counts(tiny_model_spec(TINY)).total
    tokens = BATCH * TINY.seq_len
    print(f"{'layout':20} {'measured ms':>12} {'p10-p90':>15} {'sysplan ms':>11} {'err':>7} "
          f"{'naive ms':>9} {'err':>7}  per-term error (predicted/measured ms)")
    ours, naive, measured, predicted = [], [], [], []
    for name, result in zip(names, results, strict=True):
        p = predict(TINY, LAYOUTS[name], cluster, efficiency)
        m = result.median_step_s
        world = LAYOUTS[name].world_size
        share = min(1.0, cpu_cores() / world)  # processes share this machine's cores
        base = 6.0 * params * tokens / (0.4 * cluster.gpu.peak("fp32") * share * world)
        ours.append(abs(p.step_time_s / m - 1))
        naive.append(abs(base / m - 1))
        measured.append(m)
        predicted.append(p.step_time_s)
        split = {"compute": sum(r.compute_s for r in result.ranks) / world,
                 "pipeline": sum(r.pipeline_wait_s for r in result.ranks) / world,
                 **{g: sum(r.comm_s.get(g, 0.0) for r in result.ranks) / world
                    for g in ("tp", "cp", "dp")}}
        terms = " ".join(f"{k} {1e3 * p.terms_s[k]:.0f}/{1e3 * v:.0f}"
                         for k, v in split.items() if v > 0 or p.terms_s[k] > 0)
        print(f"{name:20} {1e3 * m:12.1f} {1e3 * result.p10_step_s:7.1f}-"
              f"{1e3 * result.p90_step_s:<7.1f} {1e3 * p.step_time_s:11.1f} "
              f"{p.step_time_s / m - 1:+7.0%} {1e3 * base:9.1f} {base / m - 1:+7.0%}  {terms}")
    tau = kendalltau(measured, predicted).statistic if len(names) > 1 else float("nan")
    tau_naive = kendalltau(measured, [6.0 / lay.world_size for lay in
                                      (LAYOUTS[n] for n in names)]).statistic \
        if len(names) > 1 else float("nan")
    print(f"MAPE: sysplan {100 * sum(ours) / len(ours):.1f} %  naive {100 * sum(naive) / len(naive):.1f} %"
          f"   ranking (Kendall tau, measured vs predicted): sysplan {tau:+.2f}  naive "
          f"{tau_naive:+.2f}")
    _drift(names[0], results[0].median_step_s, args.steps, warmup, args.nproc)
    return 0


def _drift(name: str, first_s: float, steps: int, warmup: int, nproc: int) -> None:
    """Run the first layout again after all the others and print how far this machine's
    speed moved: the profile was measured once, before every run, so a VM that slows down
    (or speeds up) during the benchmark shows as error in every row."""
    again = run_cases([RunCase(tiny=TINY, layout=LAYOUTS[name])], steps, warmup,
                      max_procs=nproc)[0].median_step_s
    print(f"machine drift: {name} measured {1e3 * first_s:.1f} ms first and {1e3 * again:.1f} ms "
          f"after the other layouts ({again / first_s - 1:+.0%}); the profile was measured once, "
          "before both")


if __name__ == "__main__":
    sys.exit(main())
