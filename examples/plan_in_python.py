"""Plan Llama 3.1 70B on 64 H100s from Python and compare the best plan with a pinned one.

    python examples/plan_in_python.py
"""

import sysplan


def main() -> None:
    best = sysplan.plan_training("70b", "dgx-h100", gpus=64, top=3)
    pinned = sysplan.plan_training("70b", "dgx-h100", gpus=64, tp=8, pp=2, recompute="full",
                                   top=1)
    for label, result in (("searched", best), ("pinned tp8 pp2 full", pinned)):
        plan = result.plans[0]
        par, est = plan.parallel, plan.estimate
        print(f"{label:20} tp{par.tp} pp{par.pp} dp{par.dp} cp{par.cp} zero{par.zero} "
              f"mb{par.micro_batch} {par.recompute:9} {est.tokens_per_s_per_gpu:8,.0f} tok/s/GPU "
              f"MFU {est.mfu:.1%}  {est.memory.total_bytes / 2**30:.1f} GiB")
    print(best.explanation)


if __name__ == "__main__":
    main()
