"""`sysplan serve` speaks train's language (issue 16): a "why" paragraph and --explain, cost
in the table with --gpu-cost, --export json and `sysplan export` of serve documents, a
published JSON schema, `sysplan.plan_serving`, whole lines in a pipe, progress and --quiet."""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console
from test_cli import invoke, stderr_lines

from sysplan.exporters import serve_json

#: A small search (two GPUs, short requests, two Optuna trials): a few seconds.
SEARCH = ("serve", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "2", "--isl", "500",
          "--osl", "50", "--num-requests", "100", "--trials", "2", "--slo", "ttft=500ms")
#: One pinned deployment at a rate: one simulation.
PINNED = ("serve", "--model", "8b", "--cluster", "dgx-h100", "--tp", "1", "--replicas", "1",
          "--isl", "500", "--osl", "50", "--num-requests", "100", "--rate", "5",
          "--slo", "ttft=500ms")


@pytest.fixture(scope="module")
def searched() -> dict:
    """One `serve --json --gpu-cost` document of a real (small) search."""
    result = invoke(*SEARCH, "--gpu-cost", "2.5", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_the_serve_document_is_valid_against_the_published_schema(searched: dict) -> None:
    schema = serve_json.load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator(schema).validate(searched)
    assert searched["kind"] == "serve" and searched["schema_version"] == serve_json.SCHEMA_VERSION
    plan_keys = set(schema["$defs"]["plan"]["properties"])
    assert set(searched["plans"][0]) <= plan_keys  # every key written is documented
    assert set(searched) <= set(schema["$defs"]["result"]["properties"])


def test_the_schema_refuses_a_garbled_document(searched: dict) -> None:
    validator = jsonschema.Draft202012Validator(serve_json.load_schema())
    broken = {**searched, "plans": [{**searched["plans"][0], "rank": 0}]}
    assert not validator.is_valid(broken)
    assert not validator.is_valid({**searched, "schema_version": "2.0"})


def test_the_why_paragraph_names_the_slo_the_limit_and_the_alternatives(searched: dict) -> None:
    text = searched["explanation"]
    best = searched["plans"][0]
    assert "wins at" in text and "output tokens/s per GPU" in text
    assert "The tightest SLO is TTFT p90" in text and "below the bound" in text
    assert "Throughput is limited by" in text
    limits = ("KV-cache memory", "compute-bound prefill", "decode memory bandwidth",
              "decode compute", "the batch limit")
    assert any(limit in text for limit in limits)
    other_tp = "other-TP" if best["layout"]["tp"] else "aggregated"
    assert f"The best {other_tp} deployment" in text or "The best disaggregated" in text
    # shortfalls are positive percentages
    assert not re.search(r"-\d+(\.\d+)?% worse", text)
    for share in re.findall(r"is (\d+(?:\.\d+)?)% worse", text):
        assert float(share) >= 0


def test_gpu_cost_prices_every_plan_in_the_document(searched: dict) -> None:
    assert searched["gpu_hour_cost"] == 2.5
    for plan in searched["plans"]:
        assert plan["cost_per_hour"] == pytest.approx(2.5 * plan["gpus"])
        expected = plan["cost_per_hour"] / 3600 / plan["output_tokens_per_s"] * 1e6
        assert plan["dollars_per_million_output_tokens"] == pytest.approx(expected)


def test_export_reads_a_serve_document(searched: dict, tmp_path: Path) -> None:
    saved = tmp_path / "serve.json"
    saved.write_text(json.dumps(searched))
    result = invoke("export", str(saved), "--to", "vllm,sglang,json", "-o", str(tmp_path / "a"))
    assert result.exit_code == 0, result.stderr
    written = [Path(line) for line in result.stdout.splitlines()]
    vllm = tmp_path / "a" / "serve" / "vllm" / "launch.sh"
    assert vllm in written and (tmp_path / "a" / "serve.json") in written
    assert vllm.read_text() == searched["plans"][0]["exports"]["vllm"]["files"][
        "serve/vllm/launch.sh"]
    assert os.stat(vllm).st_mode & stat.S_IXUSR
    again = json.loads((tmp_path / "a" / "serve.json").read_text())
    assert [p["rank"] for p in again["plans"]] == [1]
    # the narrowed document exports again, and --rank picks another deployment
    second = invoke("export", str(saved), "--to", "trtllm", "--rank", "2", "-o",
                    str(tmp_path / "b"))
    assert second.exit_code == 0, second.stderr
    assert (tmp_path / "b" / "serve" / "trtllm" / "launch.sh").read_text() == searched[
        "plans"][1]["exports"]["trtllm"]["files"]["serve/trtllm/launch.sh"]


def test_export_of_a_serve_document_refuses_train_targets(searched: dict,
                                                          tmp_path: Path) -> None:
    saved = tmp_path / "serve.json"
    saved.write_text(json.dumps(searched))
    result = invoke("export", str(saved), "--to", "megatron", "-o", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert "vllm, sglang, trtllm, json" in stderr_lines(result)[-1]
    missing = invoke("export", str(saved), "--to", "vllm", "--rank", "9", "-o",
                     str(tmp_path / "x"))
    assert missing.exit_code == 2 and "holds plans of rank 1" in stderr_lines(missing)[-1]


def test_export_refuses_paths_that_leave_the_output_folder(searched: dict,
                                                           tmp_path: Path) -> None:
    plan = dict(searched["plans"][0])
    plan["exports"] = {"vllm": {"files": {"../escape.sh": "#!/bin/sh\n"}}}
    saved = tmp_path / "serve.json"
    saved.write_text(json.dumps({**searched, "plans": [plan]}))
    result = invoke("export", str(saved), "--to", "vllm", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "leaves the output folder" in result.stderr
    assert not (tmp_path / "escape.sh").exists()


def test_piped_output_has_cost_columns_whole_lines_and_the_paragraph(tmp_path: Path) -> None:
    result = invoke(*PINNED, "--gpu-cost", "2", "--export", "json,vllm", "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    # whole lines in a pipe: the paragraph is one line, no header value continues below it
    paragraph = [line for line in lines if "every dimension pinned" in line]
    assert len(paragraph) == 1 and paragraph[0].rstrip().endswith(".")
    assert not any(line.startswith("          ") for line in lines[:7])
    header = {line.split()[0]: line for line in lines[:6] if line.strip()}
    assert header["cost"].endswith("$2.00 per GPU-hour")
    assert "search    1 deployment, 1 simulation in" in result.stdout
    head = next(i for i, line in enumerate(lines) if line.startswith("#  GPUs"))
    assert "$/hour" in lines[head] and "$/Mtok" in lines[head - 1]
    row = lines[head + 2].split()
    assert row[:3] == ["1", "1", "tp1"] and row[-2] == "2.00"
    assert "every dimension pinned" in result.stdout
    # --export json writes the document `sysplan export` reads
    document = json.loads((tmp_path / "serve.json").read_text())
    jsonschema.Draft202012Validator(serve_json.load_schema()).validate(document)
    assert (tmp_path / "serve" / "vllm" / "launch.sh").exists()
    assert f"wrote {tmp_path / 'serve.json'}" in result.stderr


def test_explain_shows_every_deployment_and_the_notes() -> None:
    result = invoke(*PINNED, "--explain")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "#1 tp1 x1: aggregated, 1 GPU, bf16 weights, bf16 KV" in out
    assert "knobs: max_num_seqs" in out and "memory: weights" in out
    assert "latency (ms)" in out
    assert re.search(r"^E2E\s+[\d,]+\s+[\d,]+\s+[\d,]+", out, re.MULTILINE)
    assert "notes" in out and "- every dimension pinned" in out
    assert "$/hour" not in out  # no price, no dollars


def test_quiet_prints_no_notes(tmp_path: Path) -> None:
    loud = invoke(*PINNED)
    quiet = invoke(*PINNED, "--quiet")
    assert any(line.startswith("note:") for line in stderr_lines(loud))
    assert quiet.exit_code == 0 and stderr_lines(quiet) == []
    def timeless(text: str) -> str:
        return re.sub(r"in [\d.]+ s", "", text)

    assert timeless(quiet.stdout) == timeless(loud.stdout)  # the same results
    train = invoke("train", "--model", "8b", "--cluster", "dgx-h100", "--top", "1", "-q")
    assert train.exit_code == 0 and stderr_lines(train) == []


class FakeCounters:
    """A SearchProgress moving through the stages as the test says."""

    def __init__(self) -> None:
        self.stage, self.simulations, self.trials_total, self.trials_done = "starting", 0, 0, 0
        self.stage_started_s = 0.0


def test_progress_off_a_terminal_is_log_lines_with_counts_and_an_eta(monkeypatch) -> None:
    import time

    from sysplan.cli import output

    monkeypatch.setattr(output, "QUIET_FOR_S", 0.0)
    monkeypatch.setattr(output, "POLL_S", 0.01)
    buffer = io.StringIO()
    err = Console(file=buffer, force_terminal=False, soft_wrap=True)
    counters = FakeCounters()
    with output.search_progress(err, counters, "serve 8b on vllm"):
        counters.stage, counters.simulations = "screening", 12
        time.sleep(0.1)
        counters.stage, counters.stage_started_s = "tuning", time.monotonic() - 2.0
        counters.trials_total, counters.trials_done = 8, 4
        time.sleep(0.1)
    lines = buffer.getvalue().splitlines()
    assert "serve 8b on vllm: screening, 12 simulations" in lines
    tuning = [line for line in lines if ": tuning," in line]
    assert tuning and "trial 4/8" in tuning[0] and re.search(r"ETA \d+ s", tuning[0])
    assert lines[-1].startswith("serve 8b on vllm: done, 12 simulations in")
    quiet = io.StringIO()
    with output.search_progress(Console(file=quiet), FakeCounters(), "x", quiet=True):
        pass
    assert quiet.getvalue() == ""


def test_the_planner_counts_optuna_trials_for_the_progress_display() -> None:
    from sysplan.hardware import load_cluster
    from sysplan.models import resolve_model
    from sysplan.planners.serving.progress import SearchProgress
    from sysplan.planners.serving.search import ServeQuestion, plan_serving
    from sysplan.workloads.serving import ServeWorkload
    from sysplan.workloads.slo import parse_slos

    counters = SearchProgress()
    plan_serving(ServeQuestion(
        model=resolve_model("8b")[0], cluster=load_cluster("dgx-h100")[0], max_gpus=1,
        workload=ServeWorkload(isl="500", osl="50", num_requests=100),
        slos=tuple(parse_slos(["ttft=500ms"])), trials=2, top=1, progress=counters))
    assert counters.stage == "verifying" and counters.simulations > 0
    assert counters.trials_total >= 2 and counters.trials_done == counters.trials_total


def test_plan_serving_is_the_library_entry() -> None:
    import sysplan

    assert "plan_serving" in sysplan.__all__ and ">>>" not in sysplan.plan_serving.__doc__
    assert "sysplan.plan_serving(" in sysplan.plan_serving.__doc__
    result = sysplan.plan_serving("8b", "dgx-h100", isl=500, osl=50, rate=5,
                                  slo="ttft=500ms", tp=1, replicas=1, num_requests=100)
    best = result.plans[0]
    assert best.num_gpus == 1 and best.rate_rps == 5 and best.summary["meets_slo"]
    assert "every dimension pinned" in result.explanation
    assert result.model == "Llama 3.1 8B" and result.engine == "vllm"


def test_every_serve_prediction_states_its_error_band(searched: dict) -> None:
    """The serving benchmark's out-of-sample MAPE per metric (planners/serving/
    accuracy_bands.json, written by benchmarks/serving_accuracy.py --write-bands)."""
    from sysplan.planners.accuracy import serve_accuracy_line, serve_bands

    metrics = serve_bands()["metrics"]
    assert all(m["rows"] > 0 and 0 < m["mape"] < 1 for m in metrics.values())
    ttft = metrics["ttft_s"]["mape"]
    assert f"±{ttft:.0%} TTFT" in searched["accuracy"]
    assert serve_accuracy_line("cdna3").startswith("unvalidated: no published serving run on "
                                                   "cdna3 GPUs")
