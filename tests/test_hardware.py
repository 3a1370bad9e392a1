"""Hardware catalog and loaders: datasheet numbers, lookup rules, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysplan.core.errors import InputError
from sysplan.hardware import Cluster, list_gpus, load_cluster, load_gpu
from sysplan.hardware.types import DTYPES

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "frontier.yaml"

CATALOG_GPUS = [
    "A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM", "H100-PCIe", "H100-SXM-96GB-500W", "H200",
    "B200", "GB200", "B300", "GB300", "MI250X", "MI300X", "L40S",
]
CATALOG_CLUSTERS = [
    "dgx-a100", "dgx-h100", "dgx-h200", "dgx-b200", "dgx-b300", "gb200-nvl72", "gb300-nvl72",
    "frontier", "mi300x",
]

GOOD_CLUSTER = """\
name: my-cluster
gpu: H100-SXM
gpus_per_node: 8
default_nodes: 4
tiers:
  - name: NVLink4
    domain: node
    bandwidth: 450GB/s
    latency: 2us
  - name: InfiniBand NDR
    domain: cluster
    nics_per_node: 8
    nic_bandwidth: 400Gbps
    latency: 5us
    oversubscription: '2:1'
"""


def write(directory: Path, text: str, name: str = "cluster.yaml") -> str:
    (directory / name).write_text(text)
    return name


def load_error(directory: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The message of the InputError that loading ``text`` as ``cluster.yaml`` raises."""
    monkeypatch.chdir(directory)
    with pytest.raises(InputError) as caught:
        load_cluster(write(directory, text))
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- GPU catalog -------------------------------------------------------------------------


def test_gpu_catalog_lists_every_design_gpu() -> None:
    assert set(CATALOG_GPUS) <= set(list_gpus())


@pytest.mark.parametrize("name", CATALOG_GPUS)
def test_every_gpu_has_bf16_and_a_source(name: str) -> None:
    gpu = load_gpu(name)
    assert gpu.name == name
    assert gpu.peak("bf16") > gpu.peak("fp32") > 0
    assert set(gpu.peak_flops) <= set(DTYPES)
    assert len(gpu.source) > 20
    if "fp8" in gpu.peak_flops:  # dense fp8 is twice dense bf16 on every catalog GPU
        assert gpu.peak("fp8") == pytest.approx(2 * gpu.peak("bf16"), rel=0.02)


def test_b300_is_blackwell_ultra_at_hgx_rates() -> None:
    # HGX B300: 288 GB and GB300's memory, the B200's dense rates (36 PF BF16 sparse per 8)
    b300, gb300, b200 = load_gpu("B300"), load_gpu("GB300"), load_gpu("B200")
    assert b300.memory_bytes == gb300.memory_bytes == 288e9
    assert b300.peak_flops["bf16"] == b200.peak_flops["bf16"] == 2250e12
    assert b300.peak("fp8") == 4500e12
    cluster, _ = load_cluster("b300")
    assert cluster.name == "dgx-b300" and cluster.gpus_per_node == 8
    assert cluster.tiers[1].bandwidth_bytes_per_s == 100e9  # one 800 Gb/s ConnectX-8 per GPU


def test_h100_sxm_datasheet_numbers() -> None:
    gpu = load_gpu("H100-SXM")
    assert gpu.memory_bytes == 80 * 2**30
    assert gpu.hbm_bandwidth_bytes_per_s == 3.35e12
    assert gpu.peak_flops == {
        "fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12, "fp8": 1978.9e12,
    }
    assert gpu.power_w == 700.0
    assert (gpu.vendor, gpu.gpu_class) == ("nvidia", "hopper")


def test_other_datasheet_numbers() -> None:
    a100 = load_gpu("A100-SXM4-80GB")
    assert (a100.memory_bytes, a100.hbm_bandwidth_bytes_per_s) == (85_899_345_920, 2.039e12)
    assert a100.peak("bf16") == 312e12
    assert load_gpu("A100-SXM4-40GB").hbm_bandwidth_bytes_per_s == 1.555e12
    gcd = load_gpu("MI250X")  # one GCD: half a package
    assert (gcd.memory_bytes, gcd.peak("bf16"), gcd.peak("fp32")) == (64 * 2**30, 191.5e12, 47.85e12)
    assert "tf32" not in gcd.peak_flops and "fp8" not in gcd.peak_flops
    assert load_gpu("MI300X").peak("bf16") == 1307.4e12
    assert load_gpu("H200").peak("bf16") == load_gpu("H100-SXM").peak("bf16")
    assert load_gpu("H100-SXM-96GB-500W").hbm_bandwidth_bytes_per_s == 2.4e12


def test_gpu_lookup_is_case_insensitive_with_aliases() -> None:
    assert load_gpu("h100").name == "H100-SXM"
    assert load_gpu("a100").name == "A100-SXM4-80GB"
    assert load_gpu(" mi250x ").name == "MI250X"
    assert load_gpu("l40s") is load_gpu("L40S")


def test_unknown_gpu_suggests_and_lists() -> None:
    with pytest.raises(InputError) as caught:
        load_gpu("H100-SXMM")
    message = str(caught.value)
    assert message.startswith("unknown GPU 'H100-SXMM' (did you mean 'H100-SXM'")
    assert "catalog GPUs: A100-SXM4-40GB, A100-SXM4-80GB, H100-SXM" in message


# --- cluster catalog ---------------------------------------------------------------------


@pytest.mark.parametrize("name", CATALOG_CLUSTERS)
def test_every_catalog_cluster_is_sound(name: str) -> None:
    cluster, notes = load_cluster(name)
    assert notes == []
    assert cluster.name == name and cluster.source
    assert all(tier.source for tier in cluster.tiers)
    assert cluster.tiers[-1].domain_size >= cluster.default_gpus
    bandwidths = [tier.bandwidth_bytes_per_s for tier in cluster.tiers]
    assert bandwidths == sorted(bandwidths, reverse=True)  # outer tiers are never faster


def test_dgx_h100_tiers() -> None:
    cluster, _ = load_cluster("dgx-h100")
    nvlink, infiniband = cluster.tiers
    assert (nvlink.domain_size, nvlink.bandwidth_bytes_per_s) == (8, 450e9)
    assert infiniband.bandwidth_bytes_per_s == 50e9  # 8 NICs x 400 Gb/s over 8 GPUs
    assert cluster.gpu.name == "H100-SXM"
    assert load_cluster("DGX-H100")[0] is cluster
    assert load_cluster("a100")[0].name == "dgx-a100"


def test_frontier() -> None:
    cluster, _ = load_cluster("frontier")
    assert len(cluster.tiers) == 3
    assert cluster.default_gpus == 1024
    assert cluster.max_nodes == 9408
    assert [t.domain_size for t in cluster.tiers] == [2, 8, 9408 * 8]
    assert [t.bandwidth_bytes_per_s for t in cluster.tiers] == [200e9, 50e9, 12.5e9]
    assert cluster.gpu.name == "MI250X"


def test_gb200_nvl72_domain_spans_trays() -> None:
    cluster, _ = load_cluster("gb200")
    assert cluster.gpus_per_node == 4
    assert cluster.tiers[0].domain_size == 72
    assert cluster.default_gpus == 72


def test_tier_index_for_span() -> None:
    frontier, _ = load_cluster("frontier")
    spans = {1: 0, 2: 0, 3: 1, 8: 1, 9: 2, 1024: 2, 10**7: 2}
    assert {span: frontier.tier_index_for_span(span) for span in spans} == spans
    dgx, _ = load_cluster("dgx-h100")
    assert (dgx.tier_index_for_span(8), dgx.tier_index_for_span(16)) == (0, 1)


# --- lookup rules ------------------------------------------------------------------------


def test_missing_file_named_after_a_catalog_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cluster, notes = load_cluster("frontier.yaml")
    assert cluster is load_cluster("frontier")[0]
    assert notes == ["frontier.yaml not found; using the catalog cluster 'frontier'"]
    cluster, notes = load_cluster("configs/DGX-H100.yml")
    assert cluster.name == "dgx-h100"
    assert notes == ["configs/DGX-H100.yml not found; using the catalog cluster 'dgx-h100'"]


def test_unknown_cluster_lists_the_catalog() -> None:
    with pytest.raises(InputError) as caught:
        load_cluster("fronteir")
    message = str(caught.value)
    assert message.startswith("unknown cluster 'fronteir' (did you mean 'frontier'?); ")
    assert "catalog clusters: dgx-a100, dgx-h100, dgx-h200, dgx-b200, dgx-b300, gb200-nvl72" in message
    assert message.endswith("or give a path to a cluster YAML file")


def test_missing_file_with_unknown_stem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        load_cluster("fronteir.yaml")
    assert str(caught.value).startswith(
        "cluster file 'fronteir.yaml' not found and 'fronteir' is not a catalog cluster "
        "(did you mean 'frontier'?); catalog clusters: dgx-a100"
    )


def test_existing_file_wins_over_catalog_stem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cluster, notes = load_cluster(write(tmp_path, GOOD_CLUSTER, "frontier.yaml"))
    assert (cluster.name, notes) == ("my-cluster", [])


# --- user files --------------------------------------------------------------------------


def test_user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cluster, notes = load_cluster(write(tmp_path, GOOD_CLUSTER))
    assert notes == []
    assert isinstance(cluster, Cluster)
    assert (cluster.name, cluster.default_gpus) == ("my-cluster", 32)
    outer = cluster.tiers[1]
    assert outer.bandwidth_bytes_per_s == 50e9 and outer.oversubscription == 2.0
    assert outer.effective_bandwidth_bytes_per_s == 25e9
    assert outer.latency_s == pytest.approx(5e-6)


def test_user_file_name_defaults_to_stem_and_inline_gpu(tmp_path: Path) -> None:
    text = GOOD_CLUSTER.replace("name: my-cluster\n", "").replace(
        "gpu: H100-SXM\n",
        "gpu:\n  name: X1\n  vendor: NVIDIA\n  gpu_class: hopper\n  memory: 64GB\n"
        "  memory_bandwidth: 2TB/s\n  power: 600W\n  peak: {bf16: 500TFLOP/s}\n",
    )
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    cluster, _ = load_cluster(str(path))
    assert cluster.name == "lab"
    assert (cluster.gpu.name, cluster.gpu.vendor, cluster.gpu.memory_bytes) == ("X1", "nvidia", 64e9)
    assert cluster.gpu.source == f"given in {path}"


def test_example_frontier_file_matches_the_catalog() -> None:
    example, notes = load_cluster(str(EXAMPLE))
    assert notes == []
    catalog, _ = load_cluster("frontier")
    assert example.name == "frontier-example"
    assert example.model_copy(update={"name": "frontier"}) == catalog


BAD_FILES = [
    ("tiers:\n  - name: [unclosed\n", "cluster.yaml: not valid YAML: "),
    ("- just\n- a list\n", "cluster.yaml: expected a mapping of fields, got list"),
    (GOOD_CLUSTER.replace("nic_bandwidth: 400Gbps", "nic_bandwidth: 400"),
     "cluster.yaml: tiers[1].nic_bandwidth: '400' has no unit (write e.g. 400Gbps or 400GB/s)"),
    (GOOD_CLUSTER.replace("    nics_per_node: 8\n    nic_bandwidth: 400Gbps", "    bandwidth: 400"),
     "cluster.yaml: tiers[1].bandwidth: '400' has no unit (write e.g. 400Gbps or 400GB/s)"),
    (GOOD_CLUSTER.replace("bandwidth: 450GB/s", "bandwith: 450GB/s"),
     ("cluster.yaml: tiers[0].bandwith: unknown field (did you mean 'bandwidth'? accepted: name, "
      "domain, bandwidth, nics_per_node, nic_bandwidth, latency, oversubscription, source)")),
    (GOOD_CLUSTER.replace("gpus_per_node: 8\n", ""),
     "cluster.yaml: missing field 'gpus_per_node'"),
    (GOOD_CLUSTER.replace("latency: 2us", "latency: 2"),
     "cluster.yaml: tiers[0].latency: '2' has no unit (write e.g. 2us or 2ms)"),
    (GOOD_CLUSTER.replace("gpu: H100-SXM", "gpu: H100-SXMM"),
     "cluster.yaml: gpu: unknown GPU 'H100-SXMM' (did you mean 'H100-SXM'"),
    (GOOD_CLUSTER.replace("domain: node", "domain: rack"),
     "cluster.yaml: tiers[0].domain: 'rack' is not a GPU count, 'node' or 'cluster'"),
    (GOOD_CLUSTER.replace("domain: cluster", "domain: 8"),
     "cluster.yaml: tier domain sizes must strictly grow innermost-first, got [8, 8]"),
    (GOOD_CLUSTER.replace("    latency: 5us", "    bandwidth: 50GB/s\n    latency: 5us"),
     ("cluster.yaml: tiers[1]: give either 'bandwidth' (per GPU, per direction) or both "
      "'nics_per_node' and 'nic_bandwidth'")),
    (GOOD_CLUSTER.replace("'2:1'", "0.5"),
     "cluster.yaml: tiers[1].oversubscription: 0.5 is not a ratio of at least 1"),
    (GOOD_CLUSTER.replace("default_nodes: 4", "default_nodes: 4.5"),
     "cluster.yaml: default_nodes: 4.5 is not a positive whole number"),
    (GOOD_CLUSTER + "max_nodes: 2\n", "cluster.yaml: default_nodes: 4 is more than max_nodes (2)"),
    (GOOD_CLUSTER + "gpus_per_node: 4\n",
     "cluster.yaml: not valid YAML: field 'gpus_per_node' is given twice"),
    (GOOD_CLUSTER.replace("tiers:\n", "tiers: []\nx:\n"), "cluster.yaml: x: unknown field"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_bad_cluster_files_name_the_field(
    text: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_error(tmp_path, text, monkeypatch).startswith(expected)


def test_bad_inline_gpu_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inline = (
        "gpu:\n  name: X1\n  vendor: nvidia\n  gpu_class: hoper\n  memory: 64GB\n"
        "  memory_bandwidth: 2TB/s\n  power: 600W\n  peak: {bf16: 500TFLOP/s}\n"
    )
    text = GOOD_CLUSTER.replace("gpu: H100-SXM\n", inline)
    assert load_error(tmp_path, text, monkeypatch).startswith(
        "cluster.yaml: gpu.gpu_class: 'hoper' is not one of volta, ampere"
    )
    text = GOOD_CLUSTER.replace("gpu: H100-SXM\n", inline.replace("hoper", "hopper").replace(
        "{bf16: 500TFLOP/s}", "{bf16: 500TFLOP/s, int8: 1000TFLOP/s}"))
    assert load_error(tmp_path, text, monkeypatch).startswith(
        "cluster.yaml: gpu.peak.int8: unknown field (accepted: fp32, tf32, bf16, fp16, fp8)"
    )
    text = GOOD_CLUSTER.replace("gpu: H100-SXM\n", inline.replace("hoper", "hopper").replace(
        "memory: 64GB", "memory: 64"))
    assert load_error(tmp_path, text, monkeypatch) == (
        "cluster.yaml: gpu.memory: '64' has no unit (write e.g. 64GiB)"
    )


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory, not a cluster YAML file"):
        load_cluster(str(tmp_path))
