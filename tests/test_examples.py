"""Every example in examples/ runs (house style 15: docs cannot drift)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)


def test_python_example_runs():
    out = _run(str(EXAMPLES / "plan_in_python.py"))
    assert out.returncode == 0, out.stderr
    assert "searched" in out.stdout and "pinned tp8 pp2 full" in out.stdout and "wins at" in out.stdout


def test_cluster_file_example_plans():
    out = _run("-m", "sysplan", "train", "--model", "70b", "--cluster",
               str(EXAMPLES / "frontier.yaml"), "--top", "1")
    assert out.returncode == 0, out.stderr
    assert "frontier" in out.stdout


def test_serving_trace_example_plans():
    from test_cli import invoke

    result = invoke("serve", "--model", "8b", "--cluster", "dgx-h100", "--trace",
                    str(EXAMPLES / "traces" / "chat_bursty.jsonl"), "--slo", "ttft=500ms",
                    "--gpus", "2", "--trials", "0")
    assert result.exit_code == 0, result.stderr
    assert "tp1 x2" in result.stdout or "tp2 x1" in result.stdout


def test_calibration_example_recovers_its_factors(tmp_path):
    from test_cli import invoke

    from sysplan.profiles.loader import load_profile

    out = tmp_path / "calibrated.yaml"
    result = invoke("calibrate", str(EXAMPLES / "calibration" / "runs.csv"), "--cluster",
                    "dgx-h100", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert abs(load_profile(out).calibration.gemm_scale - 0.9) < 0.05


def test_report_and_gpus_examples_run(tmp_path):
    """The examples table's `sysplan report` and `sysplan gpus` rows."""
    import json

    pytest.importorskip("matplotlib")
    from test_cli import invoke

    plan = invoke("train", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "16", "--json")
    assert plan.exit_code == 0, plan.stderr
    (tmp_path / "plan.json").write_text(plan.stdout)
    report = invoke("report", str(tmp_path / "plan.json"), "-o", str(tmp_path / "report.html"))
    assert report.exit_code == 0, report.stderr
    assert "<svg" in (tmp_path / "report.html").read_text()
    assert any(g["name"] == "H100-SXM" for g in json.loads(invoke("gpus", "--json").stdout))
