"""`sysplan calibrate --serving`: measured serving runs in, the serve_* factors out, and an
overlay `sysplan serve --profile` reads; the runs CSV's bad cells are one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_cli import invoke

from sysplan.core.errors import InputError
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.serving.cost import ServingCost
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.calibrate_serving import predict, read_serving_csv
from sysplan.profiles.loader import load_profile

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "calibration" / "serving_runs.csv"
H100 = load_cluster("dgx-h100")[0]


def _csv(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "runs.csv"
    path.write_text("model,tp,input_len,output_len,num_requests,request_rate,"
                    "output_throughput,mean_ttft_ms,mean_itl_ms\n" + body)
    return path


def test_reads_vllm_bench_columns(tmp_path):
    path = _csv(tmp_path, "8b,1,512,128,100,inf,5000,,\n8b,2,512,128,100,4,,40.5,9.5\n")
    offline, online = read_serving_csv(path, H100, resolve_model)
    assert math.isinf(offline.rate) and offline.measured == {"output_tok_per_s": 5000.0}
    assert online.rate == 4 and online.layout.tp == 2
    assert online.measured == pytest.approx({"ttft_s": 0.0405, "itl_s": 0.0095})
    assert online.knobs.max_num_seqs == 1024  # vLLM's default on an H100


@pytest.mark.parametrize(("body", "says"), [
    ("8b,1,512,128,100,inf,,,\n", "nothing measured"),
    ("8b,one,512,128,100,inf,5000,,\n", "tp 'one' is not a number"),
    ("8b,1,512,128,100,fast,5000,,\n", "request_rate 'fast'"),
    ("8b,1,512,128,1e9,inf,5000,,\n", "num_requests"),
    ("8b,1,,128,100,inf,5000,,\n", "missing input_len or isl"),
])
def test_bad_cells_name_the_row(tmp_path, body, says):
    with pytest.raises(InputError, match=says):
        read_serving_csv(_csv(tmp_path, body), H100, resolve_model)


def test_non_utf8_file_is_input_error(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_bytes(b"model,tp\n\xff\xfe,1\n")
    with pytest.raises(InputError, match="cannot read"):
        read_serving_csv(path, H100, resolve_model)


def test_calibrate_serving_recovers_the_example_and_serve_reads_it(tmp_path):
    # the example's "measurements" come from known factors (examples/README.md): gemm 0.8,
    # memory 0.85, 2 ms per iteration, 20 us per all-reduce, 10 ms per request
    out = tmp_path / "serving.yaml"
    result = invoke("calibrate", "--serving", str(EXAMPLE), "--cluster", "dgx-h100",
                    "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert "MAPE before" in result.stdout
    profile = load_profile(out)
    fitted = profile.calibration
    assert fitted.serve_fitted_on and profile.gemm is not None  # over the bundled H100 tables
    assert fitted.serve_gemm_scale == pytest.approx(0.8, rel=0.15)
    assert fitted.serve_iteration_overhead_s == pytest.approx(2e-3, rel=0.3)
    assert fitted.serve_request_overhead_s == pytest.approx(1e-2, rel=0.3)
    runs = read_serving_csv(EXAMPLE, H100, resolve_model)
    eff = Efficiency.from_profile(profile, H100)
    for run in runs:  # the overlay reproduces every measurement within 5 %
        ours = predict(run, efficiency=eff)
        for key, truth in run.measured.items():
            assert ours[key] == pytest.approx(truth, rel=0.05), (run.label, key)
    # and the serving cost model picks the overlay's factors up
    cost = ServingCost(resolve_model("8b")[0], H100, eff)
    assert cost.iteration_overhead_s == pytest.approx(fitted.serve_iteration_overhead_s)


def test_calibrate_serving_bad_engine_is_exit_2(tmp_path):
    result = invoke("calibrate", "--serving", str(EXAMPLE), "--cluster", "dgx-h100",
                    "--engine", "tgi", "-o", str(tmp_path / "x.yaml"))
    assert result.exit_code == 2
    assert "--engine 'tgi'" in result.stderr


def test_serve_prices_with_the_profile_it_is_given(tmp_path):
    # a serving overlay whose iterations cost 20 ms more shows in serve's TPOT; "none" and a
    # bad name are accepted / refused like train's --profile
    from sysplan.profiles.loader import write_profile
    from sysplan.profiles.schema import SCHEMA_VERSION, Calibration, Profile

    slow = tmp_path / "slow.yaml"
    write_profile(Profile(schema_version=SCHEMA_VERSION, name="slow", base="h100-sxm",
                          calibration=Calibration(serve_iteration_overhead_s=0.02,
                                                  serve_fitted_on="test")), slow)
    pinned = ("serve", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "1", "--tp", "1",
              "--replicas", "1", "--no-disagg", "--isl", "256", "--osl", "64", "--rate", "1",
              "--num-requests", "60", "--trials", "0", "--json")
    tpot = {}
    for profile in ("h100-sxm", str(slow), "none"):
        result = invoke(*pinned, "--profile", profile)
        assert result.exit_code == 0, result.stderr


        tpot[profile] = json.loads(result.stdout)["plans"][0]["latency_s"]["tpot"]["p50"]
    assert tpot[str(slow)] > tpot["h100-sxm"] + 0.015
    bad = invoke(*pinned, "--profile", "no-such-profile")
    assert bad.exit_code == 2 and "--profile no-such-profile" in bad.stderr


def test_engine_all_says_where_the_engines_differ_and_where_not():
    result = invoke("serve", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "1", "--tp",
                    "1", "--replicas", "1", "--no-disagg", "--isl", "256", "--osl", "32",
                    "--rate", "2", "--num-requests", "40", "--trials", "0", "--engine", "all")
    assert result.exit_code == 0, result.stderr
    for engine in ("engine vllm", "engine sglang", "engine trtllm"):
        assert engine in result.stdout
    said = " ".join(result.stderr.split())
    assert said.count("engines differ in memory") == 1 and "engines are equal in" in said


def test_prefix_cache_hits_shorten_ttft_and_bad_shares_are_refused():
    pinned = ("serve", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "1", "--tp", "1",
              "--replicas", "1", "--no-disagg", "--isl", "4000", "--osl", "32", "--rate", "2",
              "--num-requests", "60", "--trials", "0", "--json")
    ttft = {}
    for share in ("0", "0.8"):
        result = invoke(*pinned, "--prefix-cache-hit-rate", share)
        assert result.exit_code == 0, result.stderr
        ttft[share] = json.loads(result.stdout)["plans"][0]["latency_s"]["ttft"]["p50"]
    assert ttft["0.8"] < 0.5 * ttft["0"]
    bad = invoke(*pinned, "--prefix-cache-hit-rate", "1")
    assert bad.exit_code == 2 and "[0, 1)" in bad.stderr
