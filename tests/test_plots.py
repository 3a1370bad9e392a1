"""Pictures (issue 16): --plot writes PNG and SVG that hold what they should, the timeline's
list scheduler agrees with the closed forms, `sysplan report` writes one self-contained page,
and without matplotlib --plot is one line naming the install command."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_cli import invoke, stderr_lines

pytest.importorskip("matplotlib")

from sysplan.plots import style
from sysplan.plots.schedule import StageTimes, bubble_share, simulate, step_span

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRAIN = ("train", "--model", "gpt2", "--cluster", "dgx-h100", "--gpus", "8", "--pp", "2",
         "--top", "1")


def svg_text(path: Path) -> str:
    """The text of an SVG file, checked to parse as XML and to be an <svg> document."""
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    return " ".join(t for t in root.itertext())


def check_pictures(folder: Path, stems: list[str]) -> dict[str, str]:
    texts = {}
    for stem in stems:
        png, svg = folder / f"{stem}.png", folder / f"{stem}.svg"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert svg.stat().st_size > 1000
        texts[stem] = svg_text(svg)
    return texts


@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> tuple[Path, object, dict]:
    """One small `sysplan train --plot`, and its --json document."""
    folder = tmp_path_factory.mktemp("plots")
    shown = invoke(*TRAIN, "--plot", str(folder / "pics"))
    assert shown.exit_code == 0, shown.stderr
    document = invoke(*TRAIN, "--json")
    (folder / "plan.json").write_text(document.stdout)
    return folder, shown, json.loads(document.stdout)


def test_train_plot_writes_the_three_pictures(train_run) -> None:
    folder, result, _ = train_run
    texts = check_pictures(folder / "pics", ["train-timeline", "train-memory", "train-step"])
    assert all(label in texts["train-timeline"]
               for label in ("stage 0", "stage 1", "forward", "backward", "1f1b"))
    assert "usable memory" in texts["train-memory"] and "activations" in texts["train-memory"]
    assert all(label in texts["train-step"] for label in ("matmuls", "attention", "step time"))
    assert not (folder / "pics" / "train-cost.svg").exists()  # throughput: no cost picture
    assert "pipeline of #1" in result.stdout and "step time, term by term" in result.stdout
    assert "wrote " in result.stderr


def test_cost_objective_draws_days_and_dollars(tmp_path: Path) -> None:
    result = invoke("train", "--model", "gpt2", "--cluster", "dgx-h100", "--gpus", "32",
                    "--objective", "cost", "--train-tokens", "1T", "--gpu-hour-cost", "2",
                    "--top", "1", "--json", "--plot", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)  # --json stays one JSON object on stdout
    assert document["train_tokens"] == 1e12 and len(document["gpu_counts"]) >= 2
    text = check_pictures(tmp_path, ["train-cost"])["train-cost"]
    assert "days to train" in text and "million dollars" in text and "chosen" in text


def test_report_is_one_self_contained_page(train_run) -> None:
    folder, _, document = train_run
    result = invoke("report", str(folder / "plan.json"), "-o", str(folder / "report.html"))
    assert result.exit_code == 0, result.stderr
    html = (folder / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    for attribute in ("src=", "href="):
        assert f'{attribute}"http' not in html and f"{attribute}'http" not in html
    assert "<link" not in html and "@import" not in html
    assert document["explanation"] and document["explanation"][:60] in html
    assert "<td>1</td>" in html and "Ranked plans" in html
    assert html.count("<svg") == 3 and "stage 1" in html


def test_serve_plot_and_report(tmp_path: Path) -> None:
    args = ("serve", "--model", "gpt2", "--cluster", "dgx-h100", "--tp", "1",
            "--replicas", "1", "--rate", "2", "--isl", "200", "--osl", "20",
            "--num-requests", "60", "--trials", "0", "--slo", "ttft=500ms",
            "--slo", "tpot=50ms")
    result = invoke(*args, "--plot", str(tmp_path / "pics"))
    assert result.exit_code == 0, result.stderr
    texts = check_pictures(tmp_path / "pics", ["serve-pareto", "serve-latency"])
    assert "SLO ttft p90" in texts["serve-pareto"] and "chosen deployment" in texts[
        "serve-pareto"]
    assert "tokens/s per user" in texts["serve-pareto"]
    assert "offered requests/s" in texts["serve-latency"]
    assert "Pareto frontier" in result.stdout
    document = invoke(*args, "--json")
    (tmp_path / "serve.json").write_text(document.stdout)
    page = invoke("report", str(tmp_path / "serve.json"), "-o", str(tmp_path / "serve.html"))
    assert page.exit_code == 0, page.stderr
    html = (tmp_path / "serve.html").read_text()
    assert "<td>tp1 pp1 x1</td>" in html and "<svg" in html and "<script" not in html


def test_run_picture_from_a_report_document(tmp_path: Path) -> None:
    from sysplan.plots import save
    from sysplan.plots.run import figures

    document = {"runs": [{
        "name": "plans.json#1", "step_error": -0.2, "predicted_step_s": 0.08,
        "measured": {"median_step_s": 0.1},
        "terms": [{"name": "compute", "predicted_s": 0.05, "measured_s": 0.06},
                  {"name": "pipeline", "predicted_s": 0.03, "measured_s": 0.04}]}]}
    with style():
        save(figures(document)["run-terms"], tmp_path, "run-terms")
    text = check_pictures(tmp_path, ["run-terms"])["run-terms"]
    assert all(label in text for label in ("compute", "pipeline", "predicted", "measured"))


# --- the list scheduler -------------------------------------------------------------------------


def uniform(p: int, f: float = 1.0, b: float = 2.0) -> StageTimes:
    return StageTimes(forward=(f,) * p, backward=(b,) * p, weight=(f,) * p, comm_share=0.0,
                      hop_s=0.0, tail_s={"dp_comm": 0.0, "optimizer": 0.0})


@pytest.mark.parametrize(("p", "m"), [(1, 4), (2, 4), (4, 8), (4, 3)])
def test_1f1b_and_gpipe_match_the_closed_form(p: int, m: int) -> None:
    for schedule in ("1f1b", "gpipe"):
        ops = simulate(schedule, uniform(p), m)
        assert len(ops) == 2 * p * m
        assert step_span(ops) == pytest.approx((m + p - 1) * 3.0)  # Narayanan et al. 2021


def test_interleaving_and_zero_bubble_shrink_the_bubble() -> None:
    one = bubble_share(simulate("1f1b", uniform(4), 8), 4)
    interleaved = bubble_share(simulate("interleaved-1f1b", uniform(4), 8, vpp=2), 4)
    zero_bubble = simulate("zb-h1", uniform(4), 8)
    dualpipe = simulate("dualpipe", uniform(4), 8)
    assert interleaved < one and bubble_share(zero_bubble, 4) < one
    assert bubble_share(dualpipe, 4) < one
    assert {op.kind for op in zero_bubble} == {"F", "B", "W"}
    # every micro-batch's forward, backward and weight gradient on every stage, once
    assert len(zero_bubble) == len(dualpipe) == 3 * 4 * 8


def test_timeline_of_the_plan_matches_its_predicted_step(train_run) -> None:
    from sysplan.exporters.plan_json import load_plan_json
    from sysplan.plots.training import timeline_ops

    folder, _, _ = train_run
    plan = load_plan_json(folder / "plan.json").plans[0]
    schedule, shown, m, times, _ = timeline_ops(plan)
    assert plan.parallel.pp == 2 and shown <= m
    ops = simulate(schedule, times, m, plan.parallel.vpp)  # every micro-batch of the step
    breakdown = plan.estimate.breakdown
    predicted = plan.estimate.step_time_s - breakdown["dp_comm"] - breakdown["optimizer"]
    assert step_span(ops) == pytest.approx(predicted, rel=0.02)


# --- errors and start-up ------------------------------------------------------------------------


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize("args", [
    (*TRAIN, "--plot", "pics"),
    ("serve", "--model", "gpt2", "--cluster", "dgx-h100", "--plot", "pics"),
    ("run", "plan.json", "--plot", "pics"),
    ("report", "plan.json"),
])
def test_without_matplotlib_plot_is_one_line_exit_2(no_matplotlib, tmp_path, monkeypatch,
                                                     args) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    assert stderr_lines(result) == [
        "error: pictures need matplotlib, which is not installed: pip install 'sysplan[plot]'"]


def test_plot_folder_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("")
    result = invoke(*TRAIN, "--plot", str(target))
    assert result.exit_code == 2
    assert len(stderr_lines(result)) == 1 and "is a file" in result.stderr


def test_help_does_not_import_matplotlib() -> None:
    code = ("import sys; from sysplan.cli.main import main; "
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['--help'])\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at start-up'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_picture_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_docs import commands

    monkeypatch.chdir(tmp_path)
    lines = commands("Pictures")
    assert len(lines) == 3
    for line in lines:
        words, _, target = line.partition(" > ")
        result = invoke(*words.split()[1:])
        assert result.exit_code == 0, f"{line}: {result.stderr}"
        if target:
            Path(target.strip()).write_text(result.stdout)
    assert (tmp_path / "pics" / "train-timeline.svg").is_file()
    assert "interleaved-1f1b" in svg_text(tmp_path / "pics" / "train-timeline.svg")
    assert (tmp_path / "report.html").read_text().count("<svg") == 3
