"""`sysplan profile`: a quick CPU measurement end to end, bad profile files, no torch, and
atomic writes. The measurement tests skip without torch, except where
SYSPLAN_REQUIRE_RUNTIMES=1 (CI sets it)."""

from __future__ import annotations

import builtins
import importlib.util
import os
from pathlib import Path

import pytest
import yaml
from test_cli import invoke

from sysplan.core.errors import InputError
from sysplan.hardware import load_cluster
from sysplan.profiles.collectives import bus_bandwidth, launched_world
from sysplan.profiles.device import catalog_gpu
from sysplan.profiles.loader import load_profile, write_profile
from sysplan.profiles.measure import TORCH_MISSING, model_gemm_shapes
from sysplan.profiles.schema import SCHEMA_VERSION, Device, MemoryTable, Profile

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(
    not HAVE_TORCH and os.environ.get("SYSPLAN_REQUIRE_RUNTIMES") != "1",
    reason="torch is not installed (pip install -e '.[torch]')",
)


# --- a quick CPU measurement through the CLI ----------------------------------------------------


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Run `sysplan profile --device cpu --quick` once; the profile, cluster and stdout."""
    folder = tmp_path_factory.mktemp("profile")
    result = invoke("profile", "--device", "cpu", "--quick", "--world", "2",
                    "-o", str(folder / "cpu.yaml"))
    assert result.exit_code == 0, result.stderr
    # stderr is not a terminal here: progress is one log line per table measured
    assert "profile: measuring gemm" in result.stderr
    return folder / "cpu.yaml", folder / "local-cpu.yaml", result.stdout


@needs_torch
def test_quick_cpu_profile_has_every_table(measured) -> None:
    profile = load_profile(measured[0])
    assert profile.device.kind == "cpu" and profile.device.count == 2
    assert profile.schema_version == SCHEMA_VERSION
    assert profile.tables == ("gemm", "attention", "memory", "collectives", "eager")
    assert profile.gemm.dtype == "fp32"
    # without --model the eager chain is a small default decoder's (profiles/measure.py)
    assert [row[0] for row in profile.eager.rows] == [1, 128, 512]
    assert all(row[-1] > 0 for row in profile.gemm.rows + profile.memory.rows)
    assert all(row[5] > 0 and row[6] > 0 and row[0] == "math" for row in profile.attention.rows)
    rows = profile.collectives.rows
    assert {row[0] for row in rows} == {"all_reduce", "all_gather", "reduce_scatter",
                                        "all_to_all", "send_recv"}
    assert all(row[1] == "node" and row[4] > 0 for row in rows)
    # two single-threaded processes fit beside each other on 2 cores: their slowdown is measured
    from sysplan.profiles.device import cpu_cores

    assert [k for k, _ in profile.contention or ()] == ([2] if cpu_cores() >= 2 else [])


@needs_torch
def test_quick_cpu_summary_names_the_files_and_has_no_datasheet(measured) -> None:
    profile_path, cluster_path, stdout = measured
    assert f"wrote {profile_path}" in stdout and f"wrote {cluster_path}" in stdout
    assert "a CPU has no datasheet" in stdout
    assert "all_reduce: bus bandwidth" in stdout
    # the eager chain's times, smallest size first (profiles/summary.eager_line)
    assert "eager element-wise chain of one block: 1 token " in stdout
    assert "; 512 tokens " in stdout
    from sysplan.profiles.device import cpu_cores

    assert ("contention: 2 processes computing side by side" in stdout) == (cpu_cores() >= 2)


@needs_torch
def test_local_cpu_cluster_loads_and_plans(measured) -> None:
    _, cluster_path, _ = measured
    cluster, _ = load_cluster(str(cluster_path))
    assert cluster.gpu.gpu_class == "cpu" and cluster.gpus_per_node == 2
    assert cluster.max_nodes == 1 and len(cluster.tiers) == 1
    result = invoke("train", "--model", "gpt2", "--cluster", str(cluster_path), "--gpus", "2",
                    "--top", "1")
    assert result.exit_code == 0, result.stderr


@needs_torch
def test_train_prices_the_local_cpu_cluster_with_the_measured_profile(measured) -> None:
    profile_path, cluster_path, _ = measured
    result = invoke("train", "--model", "gpt2", "--cluster", str(cluster_path), "--gpus", "2",
                    "--top", "1", "--profile", str(profile_path))
    assert result.exit_code == 0, result.stderr
    assert load_profile(profile_path).name in result.stdout


@needs_torch
def test_model_profile_times_its_eager_chain(tmp_path: Path) -> None:
    """--model adds the model's block element-wise chain at one token and at the GEMM token
    counts; the cost model reads a per-op cost and a bandwidth from it."""
    import json

    from sysplan.costmodels.eager import eager_rates
    from sysplan.profiles.measure import MeasureRequest, measure_node

    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "num_hidden_layers": 2,
        "vocab_size": 128, "max_position_embeddings": 64}))
    profile = measure_node(MeasureRequest(device="cpu", quick=True, world=1,
                                          model=str(config))).profile
    assert "eager" in profile.tables and profile.eager.dtype == "fp32"
    assert [row[:6] for row in profile.eager.rows] == [
        (n, 64, 4, 2, 16, 128) for n in (1, 128, 512)]
    rates = eager_rates(profile.eager.rows, 4.0, host_bound=True)
    assert rates is not None and rates.op_forward_s > 0 and rates.op_backward_s > 0


# --- without torch ------------------------------------------------------------------------------


def test_without_torch_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    result = invoke("profile", "--quick", "-o", str(tmp_path / "p.yaml"))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {TORCH_MISSING}"
    assert list(tmp_path.iterdir()) == []


def test_bad_tp_list_is_one_line(tmp_path: Path) -> None:
    result = invoke("profile", "--tp", "1,x", "-o", str(tmp_path / "p.yaml"))
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --tp 1,x: 'x' is not a whole number")


# --- bad profile files --------------------------------------------------------------------------


def good_document() -> dict:
    return {
        "schema_version": "1.0", "name": "test",
        "device": {"name": "NVIDIA H100 80GB HBM3", "gpu": "H100-SXM", "date": "2026-01-01"},
        "gemm": {"dtype": "bf16", "columns": ["m", "n", "k", "time_s"],
                 "rows": [[1024, 1024, 1024, 1e-5]]},
        "memory": {"columns": ["op", "bytes", "time_s"], "rows": [["copy", 2**30, 4e-4]]},
    }


def bad_documents() -> dict[str, tuple[object, str]]:
    """name -> (document or raw text, what the error line says)."""
    newer = good_document() | {"schema_version": "2.0"}
    negative = good_document()
    negative["gemm"]["rows"] = [[1024, 1024, 1024, -1e-5]]
    columns = good_document()
    columns["memory"]["columns"] = ["op", "time_s", "bytes"]
    return {
        "newer": (newer, "schema_version '2.0' is not readable"),
        "negative": (negative, "gemm.rows: gemm.rows[0][3]: -1e-05 must be a positive number"),
        "columns": (columns, "memory.columns"),
        "malformed": ("schema_version: '1.0'\nname: [unclosed\n", "not valid YAML"),
    }


@pytest.mark.parametrize("case", list(bad_documents()))
def test_bad_profile_is_one_input_error_naming_the_file(case: str, tmp_path: Path) -> None:
    document, expected = bad_documents()[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    with pytest.raises(InputError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert expected in message


def test_good_document_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(good_document()))
    assert load_profile(path).tables == ("gemm", "memory")


# --- atomic writes ------------------------------------------------------------------------------


def small_profile() -> Profile:
    return Profile(schema_version=SCHEMA_VERSION, name="small",
                   device=Device(name="cpu", kind="cpu", date="2026-01-01T00:00:00Z"),
                   memory=MemoryTable(rows=(("copy", 2**20, 1e-4),)))


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt])
def test_interrupted_write_leaves_no_file(failure, tmp_path: Path, monkeypatch) -> None:
    def interrupted(source, target):
        raise failure

    monkeypatch.setattr(os, "replace", interrupted)
    target = tmp_path / "profile.yaml"
    expected = InputError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        write_profile(small_profile(), target)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file


def test_interrupted_write_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "profile.yaml"
    write_profile(small_profile(), target)
    before = target.read_text()
    monkeypatch.setattr(os, "replace", lambda source, target: (_ for _ in ()).throw(OSError(5)))
    with pytest.raises(InputError):
        write_profile(small_profile().model_copy(update={"name": "newer"}), target)
    assert target.read_text() == before and list(tmp_path.iterdir()) == [target]


def test_gpu_summary_compares_with_the_datasheet(capsys) -> None:
    from sysplan.cli.profile import print_summary

    print_summary(load_profile("h100-sxm"), Path("h100.yaml"), None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("wrote h100.yaml: h100-sxm-")
    assert lines[1].startswith("GEMM: best ") and "bf16" in lines[1]
    assert lines[1].endswith("of the H100-SXM datasheet (989.4 TFLOP/s)")
    assert lines[2].startswith("copy: ") and "of the datasheet 3,350.0 GB/s" in lines[2]


# --- pure parts ---------------------------------------------------------------------------------


def test_bus_bandwidth_factors_follow_nccl_tests() -> None:
    # nccl-tests doc/PERFORMANCE.md: 8 ranks, 1 GB in 1 s -> algbw 1 GB/s.
    assert bus_bandwidth("all_reduce", 8, 1e9, 1.0) == pytest.approx(1.75e9)
    assert bus_bandwidth("all_gather", 8, 1e9, 1.0) == pytest.approx(0.875e9)
    assert bus_bandwidth("reduce_scatter", 8, 1e9, 1.0) == pytest.approx(0.875e9)
    assert bus_bandwidth("send_recv", 2, 1e9, 1.0) == pytest.approx(1e9)


def test_model_gemm_shapes_are_megatron_layer_shapes() -> None:
    # Llama 3.1 70B: h 8192, 64 heads, 8 KV heads, head_dim 128, ffn 28672 (SwiGLU); tp 8.
    shapes = set(model_gemm_shapes("70b", [8], [4096]))
    forward = {(4096, 1280, 8192), (4096, 8192, 1024), (4096, 7168, 8192), (4096, 8192, 3584)}
    dgrad = {(m, k, n) for m, n, k in forward}
    wgrad = {(n, k, m) for m, n, k in forward}  # dW = dY^T X: (N, K) over the tokens
    assert shapes == forward | dgrad | wgrad


@pytest.mark.parametrize(("driver", "catalog"), [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("NVIDIA H100 PCIe", "H100-PCIe"),
    ("NVIDIA H200", "H200"), ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"),
    ("AMD Instinct MI250X/MI250", "MI250X"), ("AMD Instinct MI300X", "MI300X"),
    ("NVIDIA GeForce RTX 4090", ""),
])
def test_driver_names_map_to_catalog_gpus(driver: str, catalog: str) -> None:
    assert catalog_gpu(driver) == catalog


def test_launcher_detection() -> None:
    assert launched_world({}) is None
    assert launched_world({"WORLD_SIZE": "1", "RANK": "0"}) is None
    torchrun = launched_world({"WORLD_SIZE": "16", "RANK": "9", "LOCAL_RANK": "1",
                               "LOCAL_WORLD_SIZE": "8"})
    assert (torchrun.rank, torchrun.world, torchrun.local_rank, torchrun.nodes) == (9, 16, 1, 2)
    srun = launched_world({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "8", "SLURM_PROCID": "3",
                           "SLURM_LOCALID": "3", "SLURM_NNODES": "2"})
    assert (srun.rank, srun.world, srun.nodes) == (3, 8, 2)


@needs_torch
def test_an_existing_cluster_file_is_never_replaced_silently(tmp_path: Path, monkeypatch) -> None:
    """Refused before anything is measured (exit 2, one line naming --force)."""
    from sysplan.profiles import measure

    monkeypatch.chdir(tmp_path)
    (tmp_path / "local-cpu.yaml").write_text("mine\n")
    monkeypatch.setattr(measure, "measure_node", lambda *a, **k: pytest.fail("measured"))
    result = invoke("profile", "--device", "cpu", "--quick")
    assert result.exit_code == 2 and "--force" in result.stderr.strip().splitlines()[-1]
    assert (tmp_path / "local-cpu.yaml").read_text() == "mine\n"
    # run measures a quick profile when none is given, but not over that cluster file either
    plan = invoke("train", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "8", "--top", "1",
                  "--json")
    (tmp_path / "plan.json").write_text(plan.stdout)
    result = invoke("run", "plan.json")
    assert result.exit_code == 2 and "but local-cpu.yaml is" in result.stderr
    assert (tmp_path / "local-cpu.yaml").read_text() == "mine\n"
