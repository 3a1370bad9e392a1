"""`sysplan serve`: the planner's answers, one-line errors, determinism, Optuna storages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_cli import invoke, stderr_lines

from sysplan.core.errors import NoPlanFits
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.serving.search import ServeQuestion, plan_serving
from sysplan.planners.serving.types import ServePins
from sysplan.workloads.serving import ServeWorkload
from sysplan.workloads.slo import parse_slos

LLAMA8, _ = resolve_model("8b")
H100, _ = load_cluster("dgx-h100")
SMALL = ("serve", "--model", "8b", "--cluster", "dgx-h100", "--isl", "1000", "--osl", "100",
         "--num-requests", "300", "--top", "2")


def question(**changes) -> ServeQuestion:
    fields = {"model": LLAMA8, "cluster": H100, "max_gpus": 2, "trials": 0, "top": 2,
              "workload": ServeWorkload(isl="1000", osl="100", rate=10.0, num_requests=300),
              "slos": parse_slos(["ttft=200ms", "tpot=40ms"])}
    return ServeQuestion(**{**fields, **changes})


def test_with_a_rate_the_cheapest_deployment_meeting_the_slo_wins() -> None:
    result = plan_serving(question())
    best = result.plans[0]
    assert best.summary["meets_slo"] and best.rate_rps == 10.0
    assert best.num_gpus == min(p.num_gpus for p in result.plans)
    checks = best.summary["slo_checks"]
    assert len(checks) == 2 and all(c["met"] for c in checks)
    assert best.kv_tokens_per_replica > 0 and best.weight_bytes_per_gpu > 0


def test_without_a_rate_the_highest_slo_meeting_rate_per_gpu_is_found() -> None:
    result = plan_serving(question(workload=ServeWorkload(isl="1000", osl="100",
                                                          num_requests=300)))
    best = result.plans[0]
    assert best.max_rate_rps and best.max_rate_rps > 1.0 and best.summary["meets_slo"]
    assert best.objective_value == pytest.approx(best.max_rate_rps * 100 / best.num_gpus)


def test_a_higher_rate_needs_at_least_as_many_gpus() -> None:
    low = plan_serving(question(max_gpus=8, workload=ServeWorkload(
        isl="1000", osl="100", rate=5.0, num_requests=300)))
    high = plan_serving(question(max_gpus=8, workload=ServeWorkload(
        isl="1000", osl="100", rate=80.0, num_requests=300)))
    assert high.plans[0].num_gpus >= low.plans[0].num_gpus


def test_an_impossible_slo_exits_1_with_what_came_closest() -> None:
    with pytest.raises(NoPlanFits, match="TTFT"):
        plan_serving(question(slos=parse_slos(["ttft=1ms"])))
    result = invoke(*SMALL, "--rate", "10", "--slo", "ttft=1ms")
    assert result.exit_code == 1
    assert "even unloaded" in stderr_lines(result)[-1]


@pytest.mark.parametrize(("args", "words"), [
    (["--slo", "ttft=fast"], ["--slo ttft", "fast"]),
    (["--slo", "latency=2s"], ["latency"]),
    (["--isl", "normal:4000"], ["--isl normal:4000", "normal:MEAN,STD"]),
    (["--rate", "-3"], ["--rate -3", "inf"]),
    (["--engine", "tgi"], ["--engine tgi", "vllm"]),
    (["--rate", "2", "--concurrency", "4"], ["concurrency"]),
    (["--rate", "2", "--arrival", "weird"], ["--arrival weird", "gamma:cv="]),
    (["--rate", "2", "--trials", "-1"], ["--trials -1", "at least 0"]),
    (["--rate", "2", "--disagg", "--prefill-tp", "3"], ["--prefill-tp 3", "heads"]),
])
def test_bad_input_is_one_line_exit_2(args, words) -> None:
    result = invoke(*SMALL, *args)
    assert result.exit_code == 2, result.stdout
    line = [line for line in stderr_lines(result) if line.startswith("error:")]
    assert len(line) == 1 and all(w in line[0] for w in words), stderr_lines(result)


def test_a_fully_pinned_deployment_is_simulated_even_when_it_misses() -> None:
    pins = ServePins(tp=1, replicas=1)
    result = plan_serving(question(pins=pins, slos=parse_slos(["ttft=20ms"])))
    (plan,) = result.plans
    assert plan.deployment.replica.tp == 1 and not plan.summary["meets_slo"]
    assert "every dimension pinned" in result.notes[-1]


def _document(*extra: str) -> dict:
    result = invoke(*SMALL, "--rate", "8", "--gpus", "2", "--slo", "ttft=300ms", "--json", *extra)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    document.pop("search_time_s")
    return document


def test_json_has_the_documented_fields_and_is_byte_identical_run_to_run() -> None:
    first, second = _document("--trials", "3"), _document("--trials", "3")
    assert first == second and first["deterministic"]
    plan = first["plans"][0]
    for key in ("gpus", "layout", "precision", "engine", "max_rate_rps", "output_tokens_per_s",
                "output_tokens_per_s_per_gpu", "latency_s", "slo_attainment", "goodput_rps",
                "saturated"):
        assert key in plan
    assert set(plan["latency_s"]["ttft"]) == {"p50", "p90", "p99"}
    assert {"tp", "pp", "replicas", "disaggregated", "prefill", "decode"} <= set(plan["layout"])
    assert plan["engine"]["kv_cache_bytes_per_gpu"] > 0
    assert set(plan["exports"]) == {"vllm", "sglang", "trtllm"}
    assert "vllm serve" in plan["exports"]["vllm"]["files"]["serve/vllm/launch.sh"]


def test_sqlite_storage_resumes_the_study(tmp_path: Path) -> None:
    import optuna

    url = f"sqlite:///{tmp_path / 'study.db'}"
    q = question(trials=2, storage=url)
    plan_serving(q)
    plan_serving(q)
    summaries = optuna.get_all_study_summaries(storage=url)
    assert summaries and max(s.n_trials for s in summaries) >= 4  # the second run resumed


def test_postgresql_storage_shares_one_study() -> None:
    url = os.environ.get("SYSPLAN_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("SYSPLAN_REQUIRE_RUNTIMES") == "1":
            pytest.fail("CI must provide SYSPLAN_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("no PostgreSQL server: set SYSPLAN_TEST_POSTGRES_URL=postgresql://... "
                    "(.ci/run starts one)")
    import optuna

    q = question(trials=2, storage=url)
    plan_serving(q)
    plan_serving(q)  # a second searcher joins the same study
    storage = url.replace("postgresql://", "postgresql+psycopg://", 1)
    summaries = optuna.get_all_study_summaries(storage=storage)
    assert max(s.n_trials for s in summaries) >= 4


def test_export_writes_the_engine_commands(tmp_path: Path) -> None:
    result = invoke(*SMALL, "--rate", "8", "--gpus", "2", "--slo", "ttft=300ms", "--trials", "0",
                    "--export", "vllm,sglang", "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    script = (tmp_path / "serve/vllm/launch.sh").read_text()
    assert "vllm serve" in script and "--max-num-seqs" in script
    assert (tmp_path / "serve/sglang/launch.sh").is_file()


def test_serving_factors_act_on_serving_only() -> None:
    from dataclasses import replace

    from sysplan.costmodels.efficiency import Efficiency
    from sysplan.costmodels.serving.cost import ServingCost
    from sysplan.costmodels.serving.deployment import ReplicaLayout
    from sysplan.costmodels.types import ParallelConfig
    from sysplan.profiles.schema import Calibration
    from sysplan.workloads.training import TrainJob

    # factors with serve_fitted_on set replace the bundled serving calibration
    base = replace(Efficiency.for_cluster(H100), calibration=Calibration(serve_fitted_on="t"))
    slow = replace(base, calibration=Calibration(serve_iteration_overhead_s=0.011,
                                                 serve_memory_scale=0.5, serve_fitted_on="t"))
    layout = ReplicaLayout(tp=1)
    plain = ServingCost(LLAMA8, H100, base).decode_step_seconds(layout, 1, 1000)
    tuned = ServingCost(LLAMA8, H100, slow).decode_step_seconds(layout, 1, 1000)
    assert tuned > plain + 0.010  # 10 ms more overhead, and half the bandwidth
    from sysplan.costmodels.estimate import estimate_config

    job = TrainJob(seq_len=2048, global_batch=16)
    config = ParallelConfig(dp=8, global_batch=16)
    assert (estimate_config(LLAMA8, job, H100, config, efficiency=base).step_time_s
            == estimate_config(LLAMA8, job, H100, config, efficiency=slow).step_time_s)


def test_an_interrupted_sqlite_study_resumes_with_its_finished_trials(tmp_path: Path,
                                                                      monkeypatch) -> None:
    """Ctrl-C in the middle of tuning: the trials finished before it stay in the SQLite study
    and the rerun adds its own trials to them instead of starting over."""
    import optuna

    from sysplan.planners.serving import tuning

    url = f"sqlite:///{tmp_path / 'study.db'}"
    q = question(trials=3, storage=url)
    real, calls = tuning._with_knobs, []

    def interrupted(d, trial, fewest_seqs=8):
        if hasattr(trial, "suggest_int"):  # a trial being run (not a finished one read back)
            calls.append(trial.number)
            if len(calls) == 3:
                raise KeyboardInterrupt  # what Ctrl-C raises in the third trial
        return real(d, trial, fewest_seqs)

    monkeypatch.setattr(tuning, "_with_knobs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plan_serving(q)
    monkeypatch.setattr(tuning, "_with_knobs", real)

    (summary,) = optuna.get_all_study_summaries(storage=url)
    before = optuna.load_study(study_name=summary.study_name, storage=url).get_trials()
    done = {t.number: t.params for t in before if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(done) == 2  # the two trials finished before the interrupt were written

    plan_serving(q)
    after = optuna.load_study(study_name=summary.study_name, storage=url).get_trials()
    kept = {t.number: t.params for t in after if t.number in done}
    assert kept == done  # finished trials kept as they were
    complete = [t for t in after if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == len(done) + q.trials  # the rerun added 3, none re-run
    assert not any(t.params == before[0].params for t in complete if t.number > 2)  # the
    # untuned knobs (enqueued first) are not tried again


def test_a_sliding_window_model_is_told_its_windows_are_priced_as_full_attention() -> None:
    windowed = LLAMA8.model_copy(update={"sliding_window": 512, "sliding_window_layers": 16})
    result = plan_serving(question(model=windowed, pins=ServePins(tp=1, replicas=1)))
    assert any("16 sliding-window layers are priced as full attention" in note
               for note in result.notes)
    assert not any("sliding-window" in note for note in plan_serving(
        question(pins=ServePins(tp=1, replicas=1))).notes)
