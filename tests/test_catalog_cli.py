"""`sysplan models` and `sysplan clusters` list the catalogs the error messages point to."""

import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysplan", *args], capture_output=True,
                          text=True, check=False)


def test_models_lists_aliases_and_sizes():
    out = _run("models")
    assert out.returncode == 0, out.stderr
    assert "Llama 3.1 70B" in out.stdout and "70b" in out.stdout and "70.55 B" in out.stdout


def test_clusters_lists_tiers():
    out = _run("clusters")
    assert out.returncode == 0, out.stderr
    assert "frontier" in out.stdout and "1,024 GPUs" in out.stdout and "Slingshot" in out.stdout


def test_unknown_model_points_at_the_listing():
    out = _run("train", "--model", "llama5", "--cluster", "dgx-h100")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: unknown model 'llama5'")
    assert "sysplan models" in out.stderr and "Traceback" not in out.stderr


def test_catalogs_as_json_name_every_entry():
    import json

    models = json.loads(_run("models", "--json").stdout)
    assert any(m["name"] == "Llama 3.1 70B" and "70b" in m["aliases"] for m in models)
    clusters = json.loads(_run("clusters", "--json").stdout)
    frontier = next(c for c in clusters if c["name"] == "frontier")
    assert frontier["gpus_per_node"] == 8 and frontier["tiers"][0]["bandwidth_bytes_per_s"] > 0
    gpus = json.loads(_run("gpus", "--json").stdout)
    h100 = next(g for g in gpus if g["name"] == "H100-SXM")
    assert round(h100["peak_flops"]["bf16"] / 1e12) == 989 and h100["memory_bytes"] == 80 * 2**30


def test_gpus_table_rows_are_not_wrapped_when_piped():
    out = _run("gpus")
    assert out.returncode == 0, out.stderr
    h100 = next(line for line in out.stdout.splitlines() if line.startswith("H100-SXM "))
    assert "989" in h100 and "1,979" in h100 and "80 GiB" in h100
    # the clusters table: each cluster on one line, its tiers joined on it
    line = next(x for x in _run("clusters").stdout.splitlines() if x.startswith("dgx-h100"))
    assert "NVLink4" in line and "InfiniBand NDR" in line
