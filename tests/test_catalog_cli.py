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
