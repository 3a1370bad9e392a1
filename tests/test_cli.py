"""`sysplan train` through typer's runner: options, one-line errors, tables, JSON and its reader.

Tests marked ``needs_planner`` run the real planner; they are skipped only while
``sysplan.planners.training`` does not exist yet. The others use a hand-built result.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from sysplan.cli.main import app
from sysplan.core.errors import InputError, NoPlanFits
from sysplan.core.units import GIB
from sysplan.costmodels.types import Estimate, MemoryBreakdown, ParallelConfig
from sysplan.exporters import plan_json
from sysplan.models.spec import ModelSpec
from sysplan.planners.types import Plan, ProfileInfo, TrainingResult
from sysplan.workloads.training import TrainJob, make_train_job

needs_planner = pytest.mark.skipif(
    importlib.util.find_spec("sysplan.planners.training") is None,
    reason="sysplan.planners.training is not written yet",
)


def invoke(*args: str):
    """Run `sysplan ARGS` in-process; stdout and stderr kept apart."""
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    return runner.invoke(app, list(args), catch_exceptions=False)


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- a hand-built result ----------------------------------------------------------------------


def fake_plan(rank: int, tp: int, pp: int, step_time_s: float, *, near_tie: bool = False) -> Plan:
    memory = MemoryBreakdown(
        total_bytes=50 * GIB, weights_bytes=10 * GIB, gradients_bytes=10 * GIB,
        optimizer_bytes=5 * GIB, activations_bytes=20 * GIB, other_bytes=5 * GIB,
        terms={"logits_bytes": 3 * GIB, "allocator_reserve_bytes": 2 * GIB},
        per_stage=tuple({"total_bytes": (50 - stage) * GIB} for stage in range(pp)),
    )
    tokens_per_s = 512 * 8192 / step_time_s
    estimate = Estimate(
        step_time_s=step_time_s, tokens_per_s=tokens_per_s,
        tokens_per_s_per_gpu=tokens_per_s / 1024, mfu=0.41, hfu=0.45,
        model_flops_per_token=4.2e11, fits=True, memory=memory,
        breakdown={"compute": 0.8 * step_time_s, "pp_bubble": 0.2 * step_time_s},
    )
    parallel = ParallelConfig(
        tp=tp, pp=pp, dp=1024 // (tp * pp), micro_batch=1, global_batch=512,
        sequence_parallel=True, zero=1, recompute="selective", stage_layers=(80 // pp,) * pp,
    )
    return Plan(
        rank=rank, parallel=parallel, estimate=estimate, num_gpus=1024,
        objective_value=tokens_per_s / 1024, near_tie=near_tie, why=f"reason {rank}",
    )


def fake_result() -> TrainingResult:
    return TrainingResult(
        model="Llama 3.1 70B", cluster="frontier", num_gpus=1024, objective="throughput",
        searched=12345, feasible=2345, search_time_s=0.84,
        profile=ProfileInfo(
            name="default-cdna2", calibrated=False, uncalibrated_terms=("gemm efficiency",)
        ),
        plans=(fake_plan(1, 8, 4, 8.5), fake_plan(2, 8, 8, 8.6, near_tie=True)),
        explanation="The winner wins because of a reason.",
        notes=("a planner note",),
    )


@pytest.fixture
def fake_planner(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Replace sysplan.planners.training with a stub returning ``fake_result()``."""
    calls: dict = {}

    def plan_training(model, cluster, job, **kwargs):
        calls.update(model=model, cluster=cluster, job=job, **kwargs)
        if "raise" in calls:
            raise calls["raise"]
        return calls.get("result", fake_result())

    module = types.ModuleType("sysplan.planners.training")
    module.plan_training = plan_training
    monkeypatch.setitem(sys.modules, "sysplan.planners.training", module)
    return calls


# --- help and bad input -----------------------------------------------------------------------


def test_help_lists_train_and_its_options() -> None:
    top = invoke("--help")
    assert top.exit_code == 0 and "train" in top.stdout
    train = invoke("train", "--help")
    assert train.exit_code == 0
    for option in ("--model", "--cluster", "--gpus", "--global-batch", "--json", "--zero"):
        assert option in train.stdout


def test_version() -> None:
    from sysplan import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"sysplan {__version__}"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--precision", "fp4"], ["--precision", "fp4", "bf16", "fp8"]),
        (["--objective", "fast"], ["--objective", "fast", "throughput", "time-to-train"]),
        (["--recompute", "some"], ["--recompute", "some", "selective", "full"]),
        (["--zero", "4"], ["--zero", "4", "0, 1, 2, 3"]),
        (["--tp", "0"], ["--tp", "0", "at least 1"]),
        (["--gpus", "many"], ["--gpus", "many", "whole number"]),
        (["--gpu-cost", "-2"], ["--gpu-cost", "-2", "positive"]),
        (["--topp", "3"], ["--topp"]),
    ],
)
def test_bad_option_is_one_line_exit_2(args: list[str], words: list[str]) -> None:
    result = invoke("train", "--model", "70b", "--cluster", "frontier", *args)
    assert result.exit_code == 2
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_required_option() -> None:
    result = invoke("train", "--cluster", "frontier")
    assert result.exit_code == 2
    assert stderr_lines(result) == ["error: --model is required (see sysplan train --help)"]


def test_console_script_process_has_no_traceback(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "sysplan", "train", "--model", "70b", "--cluster", "x",
               "--precision", "fp4"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --precision fp4") and done.stderr.count("\n") == 1


# --- errors from the layers below -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [(InputError("--tp 3: does not divide 8 GPUs (try 1, 2, 4, 8)"), 2),
     (NoPlanFits("nothing fits: closest needs 81.2 GiB of 76.0 GiB"), 1)],
)
def test_sysplan_errors_become_one_line(fake_planner: dict, error: Exception, code: int) -> None:
    fake_planner["raise"] = error
    result = invoke("train", "--model", "70b", "--cluster", "frontier", "--tp", "3")
    assert result.exit_code == code
    assert stderr_lines(result)[-1] == f"error: {error}"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])  # also after the sub-command
def test_debug_shows_the_traceback(fake_planner: dict, where: str) -> None:
    fake_planner["raise"] = InputError("bad pin")
    args = ["train", "--model", "70b", "--cluster", "frontier"]
    result = invoke(*(["--debug", *args] if where == "before" else [*args, "--debug"]))
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and stderr_lines(result)[-1] == "error: bad pin"


@needs_planner
def test_objective_needs_its_inputs() -> None:
    result = invoke("train", "--model", "70b", "--cluster", "frontier", "--objective", "cost",
                    "--train-tokens", "15T")
    assert result.exit_code == 2 and "--gpu-cost" in result.stderr


# --- what reaches the planner, and what comes back --------------------------------------------


def test_options_reach_the_planner(fake_planner: dict) -> None:
    result = invoke(
        "train", "--model", "70b", "--cluster", "frontier.yaml", "--gpus", "512",
        "--global-batch", "4M", "--tp", "8", "--zero", "1", "--recompute", "full",
        "--no-sequence-parallel", "--no-overlap-grad-reduce", "--tp-comm-overlap",
        "--memory-headroom", "2GiB", "--top", "3",
    )
    assert result.exit_code == 0, result.stderr
    pins = fake_planner["pins"]
    assert (pins.tp, pins.zero, pins.recompute, pins.sequence_parallel) == (8, 1, "full", False)
    assert pins.pp is None
    job = fake_planner["job"]
    assert job.global_batch == 512 and not job.overlap_grad_reduce and job.tp_comm_overlap
    assert fake_planner["num_gpus"] == 512 and fake_planner["top"] == 3
    assert fake_planner["memory_headroom_bytes"] == 2 * GIB
    assert "512 sequences of 8,192 (4,194,304 tokens)" in result.stderr
    assert "frontier" in result.stderr  # the catalog fallback for frontier.yaml is announced


def test_table_output(fake_planner: dict) -> None:
    result = invoke("train", "--model", "70b", "--cluster", "frontier")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "frontier: 1,024 GCDs (default allocation: 128 nodes x 8)" in out
    assert "searched 12,345 configurations in 0.84 s" in out
    assert "default-cdna2 (uncalibrated: gemm efficiency)" in out
    assert "tp8 pp4 dp32 sp zero1 mb1" in out and "2~" in out
    assert "8.50 s" in out and "41.0 %" in out and "50.0 GiB" in out
    assert "The winner wins because of a reason." in out
    assert "note: a planner note" in result.stderr and "a planner note" not in out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert all(line == line.rstrip() for line in out.splitlines())


def test_cost_objective_shows_days_and_dollars(fake_planner: dict) -> None:
    result = fake_result()
    fake_planner["result"] = result.model_copy(update={"objective": "cost"})
    out = invoke("train", "--model", "70b", "--cluster", "frontier", "--objective", "cost",
                 "--train-tokens", "15T", "--gpu-hour-cost", "2.5").stdout
    header = next(line for line in out.splitlines() if line.startswith("#  "))
    assert header.split() == ["#", "layout", "GCDs", "recompute", "days", "cost", "$/Mtok", "MFU",
                              "memory"]
    tokens_per_s = 512 * 8192 / 8.5
    days = 15e12 / tokens_per_s / 86400
    assert f"{days:,.1f}" in out
    assert f"${days * 24 * 1024 * 2.5 / 1e6:,.1f}M" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_explain_shows_every_plan_and_the_notes(fake_planner: dict) -> None:
    result = invoke("train", "--model", "70b", "--cluster", "frontier", "--explain")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "#1 tp8 pp4" in out and "#2 tp8 pp8" in out
    assert out.count("worst-stage memory") == 2 and "allocator_reserve" in out
    assert "why: reason 2" in out and "a planner note" in out


def test_json_is_one_object_valid_against_the_schema(fake_planner: dict) -> None:
    result = invoke("train", "--model", "70b", "--cluster", "frontier", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    jsonschema.Draft202012Validator(plan_json.load_schema()).validate(document)
    assert document["schema_version"] == "1.4"
    assert document["plans"][0]["parallel"]["stage_layers"] == [20, 20, 20, 20]


# --- the JSON contract ------------------------------------------------------------------------


def test_schema_is_valid_and_matches_the_types() -> None:
    schema = plan_json.load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    plan = schema["$defs"]["plan"]["properties"]
    assert set(plan["parallel"]["properties"]) == set(ParallelConfig.model_fields)
    assert set(plan["memory"]["properties"]) == set(MemoryBreakdown.model_fields)
    assert set(schema["properties"]["profile"]["properties"]) == set(ProfileInfo.model_fields)
    recompute = ParallelConfig.model_fields["recompute"].annotation.__args__
    assert plan["parallel"]["properties"]["recompute"]["enum"] == list(recompute)


def test_document_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    document = plan_json.training_document(fake_result())
    jsonschema.Draft202012Validator(plan_json.load_schema()).validate(document)
    path.write_text(json.dumps(document))
    assert plan_json.load_plan_json(path) == fake_result()


def test_reader_accepts_newer_1x_and_ignores_unknown_keys(tmp_path: Path) -> None:
    document = plan_json.training_document(fake_result())
    document.update(schema_version="1.7", future_key={"x": 1})
    document["profile"]["future"] = True
    document["plans"][0].update(future=[1, 2])
    document["plans"][0]["parallel"]["future_dim"] = 4
    document["plans"][0]["memory"]["future_bytes"] = 1.0
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document))
    assert plan_json.load_plan_json(path).plans[0] == fake_result().plans[0]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (None, ["2.0", "1.x"]),
        ('{"plans": []}', ["no schema_version"]),
        ("{not json", ["not JSON"]),
        ('["a list"]', ["JSON object"]),
        ('{"schema_version": "1.0", "plans": []}', ["not a valid sysplan plan"]),
    ],
)
def test_reader_refuses_what_it_cannot_read(tmp_path: Path, text, words: list[str]) -> None:
    path = tmp_path / "plan.json"
    if text is None:
        document = plan_json.training_document(fake_result())
        text = json.dumps({**document, "schema_version": "2.0"})
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        plan_json.load_plan_json(path)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    assert all(word in str(caught.value) for word in words), str(caught.value)
    with pytest.raises(InputError, match="no such file"):
        plan_json.load_plan_json(tmp_path / "missing.json")


# --- make_train_job: --seq-len and --global-batch ---------------------------------------------


def small_model(max_seq_len: int = 131072) -> ModelSpec:
    return ModelSpec(
        name="tiny", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=4, head_dim=16,
        ffn_hidden=128, vocab_size=100, max_seq_len=max_seq_len,
    )


def test_train_job_defaults() -> None:
    job, notes = make_train_job(small_model(), seq_len=None, global_batch=None, precision="bf16")
    assert (job.seq_len, job.global_batch) == (8192, 512)  # 4 * 2**20 / 8192
    short, _ = make_train_job(small_model(2048), seq_len=None, global_batch=None,
                              precision="bf16")
    assert (short.seq_len, short.global_batch) == (2048, 2048)
    assert len(notes) == 1 and "4,194,304 tokens" in notes[0]


@pytest.mark.parametrize(
    ("value", "sequences"),
    [("1536", 1536), ("1,536", 1536), ("4M", 4096), ("4m", 4096), ("4Mi", 4096),
     ("1.5k", 1), (64, 64)],
)
def test_global_batch_values(value, sequences: int) -> None:
    job, _ = make_train_job(small_model(), seq_len=1024, global_batch=value, precision="bf16")
    assert job.global_batch == sequences  # tokens / 1024, rounded down; 4M = 4 x 2^20


def test_global_batch_rounding_note() -> None:
    job, notes = make_train_job(small_model(), seq_len=8192, global_batch="3.9M", precision="fp8",
                                tp_comm_overlap=True)
    assert job == TrainJob(seq_len=8192, global_batch=499, precision="fp8",
                           tp_comm_overlap=True)
    assert notes == ["--global-batch 3.9M tokens = 499 sequences of 8,192 (4,087,808 tokens)"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"global_batch": "0"}, ["--global-batch 0"]),
        ({"global_batch": "1e6"}, ["--global-batch 1e6", "4M"]),
        ({"global_batch": "4X"}, ["--global-batch", "4X"]),
        ({"global_batch": "1k"}, ["less than one sequence"]),
        ({"seq_len": 0}, ["--seq-len 0"]),
        ({"precision": "fp4"}, ["--precision fp4", "bf16"]),
        ({"overlapp": True}, ["overlapp", "overlap_grad_reduce"]),
    ],
)
def test_train_job_bad_values(kwargs: dict, words: list[str]) -> None:
    arguments = {"seq_len": 8192, "global_batch": None, "precision": "bf16", **kwargs}
    with pytest.raises(InputError) as caught:
        make_train_job(small_model(), **arguments)
    assert all(word in str(caught.value) for word in words), str(caught.value)


# --- with the real planner --------------------------------------------------------------------


@needs_planner
def test_readme_command_runs() -> None:
    result = invoke("train", "--model", "70b", "--cluster", "frontier.yaml")
    assert result.exit_code == 0, result.stderr
    assert "frontier: 1,024 GCDs (default allocation: 128 nodes x 8)" in result.stdout
    assert "Llama 3.1 70B" in result.stdout


@needs_planner
def test_real_json_validates_and_reads_back(tmp_path: Path) -> None:
    result = invoke("train", "--model", "70b", "--cluster", "dgx-h100", "--gpus", "64", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    jsonschema.Draft202012Validator(plan_json.load_schema()).validate(document)
    path = tmp_path / "plan.json"
    path.write_text(result.stdout)
    assert plan_json.load_plan_json(path).plans[0].rank == 1
    for plan in document["plans"]:
        assert sum(plan["breakdown"].values()) == pytest.approx(plan["step_time_s"], rel=1e-6)


@needs_planner
def test_pinned_knob_that_cannot_work_is_exit_2() -> None:
    result = invoke("train", "--model", "70b", "--cluster", "dgx-h100", "--gpus", "8",
                    "--tp", "3")
    assert result.exit_code == 2
    assert stderr_lines(result)[-1].startswith("error: --tp 3")


def test_job_block_round_trips(tmp_path: Path) -> None:
    job = TrainJob(seq_len=4096, global_batch=256, precision="fp8")
    result = fake_result().model_copy(update={"job": job})
    document = plan_json.training_document(result)
    jsonschema.Draft202012Validator(plan_json.load_schema()).validate(document)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document))
    assert plan_json.load_plan_json(path).job == job


@needs_planner
def test_header_states_parameters_and_mfu_against_the_bf16_peak() -> None:
    """MoE models show total and active parameters and FLOPs per token; fp8 plans report MFU
    of the bf16 peak (so they do not look worse than bf16 ones) and of the fp8 peak beside."""
    result = invoke("train", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--gpus", "16",
                    "--precision", "fp8", "--tp", "2", "--pp", "1", "--ep", "8",
                    "--micro-batch", "1", "--recompute", "full", "--zero", "1",
                    "--seq-len", "4096", "--top", "1", "--json")
    assert result.exit_code == 0, result.stderr
    estimate = json.loads(result.stdout)["plans"][0]
    # H100: the fp8 dense peak is twice the bf16 one, so MFU of bf16 is twice MFU of fp8
    assert estimate["mfu_fp8"] == pytest.approx(estimate["mfu"] / 2, rel=1e-3)
    table = invoke("train", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--gpus", "16",
                   "--precision", "fp8", "--ep", "8", "--seq-len", "4096", "--top", "1")
    assert table.exit_code == 0, table.stderr
    model_line = next(line for line in table.stdout.splitlines() if line.startswith("model"))
    assert "46.70 B parameters (12.88 B active)" in model_line and "GFLOP per token" in model_line
    assert "dense bf16 (1,978.9 TFLOP/s fp8)" in table.stdout and "MFU fp8" in table.stdout


def test_gpu_cost_adds_dollars_per_million_tokens_under_throughput(fake_planner: dict) -> None:
    out = invoke("train", "--model", "70b", "--cluster", "frontier", "--gpu-cost", "2.5").stdout
    header = next(line for line in out.splitlines() if line.startswith("#  "))
    assert "$/Mtok" in header.split()
    first = next(line for line in out.splitlines() if line.startswith("1 "))
    step = fake_result().plans[0].estimate.step_time_s
    per_million = 1024 * 2.5 / 3600 / (512 * 8192 / step) * 1e6  # GPU-hours x price per Mtok
    assert f"{per_million:,.3f}" in first.split()


def test_help_lists_every_command_without_importing_them() -> None:
    """`sysplan --help` reads the summaries in cli/main.py (each the first line of its
    command's help) and imports neither the sub-commands nor numpy: start-up stays short."""
    import importlib
    import subprocess
    import sys

    from sysplan.cli.main import COMMANDS, SUMMARIES

    for name, (module, _, help_name, _) in COMMANDS.items():
        text = getattr(importlib.import_module(f"sysplan.cli.{module}"), help_name)
        assert SUMMARIES[name] == " ".join(text.strip().splitlines()[0].split()), name
    probe = ("import sys; from sysplan.cli.main import main; code = main(['--help']); "
             "heavy = [m for m in ('numpy', 'scipy', 'sysplan.cli.train', 'sysplan.costmodels') "
             "if m in sys.modules]; print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=False).stdout
    assert "HEAVY []" in out and all(name in out for name in COMMANDS)
    # a sub-command's own help loads its module but not the cost models
    probe = probe.replace("['--help']", "['train', '--help']")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=False).stdout
    assert "HEAVY ['sysplan.cli.train']" in out and "--model" in out


def test_seq_len_takes_a_binary_suffix(fake_planner: dict) -> None:
    result = invoke("train", "--model", "70b", "--cluster", "frontier", "--seq-len", "4k")
    assert result.exit_code == 0, result.stderr
    assert fake_planner["job"].seq_len == 4096


@needs_planner
def test_piped_output_keeps_each_paragraph_on_one_line() -> None:
    """Off a terminal nothing is hard-wrapped mid-phrase: the header's values and the
    explanation paragraph each stay one line (a pipe, a file or a log reads whole lines)."""
    result = invoke("train", "--model", "70b", "--cluster", "frontier", "--gpus", "64")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    paragraph = [line for line in lines if " wins at " in line]
    assert len(paragraph) == 1 and paragraph[0].rstrip().endswith(".")
    accuracy = next(line for line in lines if line.startswith("accuracy"))
    assert accuracy.rstrip().endswith(")")  # the whole band on its line
    assert not any(line.startswith("          ") for line in lines[:9])  # no continuation


@pytest.mark.parametrize(("verb", "panels"), [
    ("train", ["Model, cluster and job:", "Objective:", "Output:", "Pinned knobs", "Export"]),
    ("serve", ["Model and cluster:", "Workload:", "Search:", "Output:", "Export:",
               "Pinned deployment"]),
])
def test_help_groups_options_in_panels_and_shows_two_examples(verb: str, panels: list) -> None:
    text = invoke(verb, "--help").stdout
    assert all(any(line.startswith(p) for line in text.splitlines()) for p in panels), text
    examples = [line for line in text.splitlines() if line.strip().startswith(f"sysplan {verb}")]
    assert len(examples) == 2
    assert text.index("Output:") < text.index("--quiet")  # --quiet sits with the output options
