"""Malformed input of any kind ends as one ``error:`` line and exit 2, never a traceback.

Each case is a reported failure (a traceback, a hang or a wrong exit code); the checks are
that the command exits with the expected code, that stderr ends with exactly one error line
and that the line names the bad value and what is accepted.
"""

from __future__ import annotations

import json

import pytest
from test_cli import invoke, stderr_lines


def error_line(result, code: int = 2) -> str:
    """The single ``error:`` line of a failed command (asserting the exit code and no traceback)."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in stderr_lines(result) if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert stderr_lines(result)[-1] == errors[0]
    return errors[0]


TRAIN = ("train", "--model", "llama2-7b", "--cluster", "dgx-a100")


def test_fp8_on_a_gpu_without_an_fp8_peak():
    line = error_line(invoke("train", "--model", "nemotron-4-15b", "--cluster", "dgx-a100",
                             "--precision", "fp8"))
    assert "--precision fp8" in line and "A100" in line and "no fp8 peak" in line
    assert line.endswith("accepted for it: bf16")


@pytest.mark.parametrize(("args", "shown"), [
    (("profile", "--tp", "\u00b2"), "--tp \u00b2"),
    ((*TRAIN, "--global-batch", "\u00b2"), "--global-batch \u00b2"),
    ((*TRAIN, "--tp", "\u00b2"), "--tp \u00b2"),
    ((*TRAIN, "--gpus", "\u0663"), "--gpus \u0663"),  # an Arabic-Indic 3: int() reads it
    ((*TRAIN, "--memory-headroom", "\u0663GiB"), "'\u0663GiB'"),
])
def test_non_ascii_digits_are_refused(args, shown):
    line = error_line(invoke(*args))
    assert shown in line
    assert "whole number" in line or "write e.g." in line or "expected" in line


@pytest.mark.parametrize(("args", "expected"), [
    ((*TRAIN, "--objective", "time-to-train", "--train-tokens", "1e400"),
     "--train-tokens: '1e400' is too large (accepted: at most 1e30)"),
    ((*TRAIN, "--memory-headroom", "1e400GiB"),
     "--memory-headroom: '1e400GiB' is too large (accepted: at most 1e30 B)"),
    ((*TRAIN, "--memory-headroom", "1e31B"), "at most 1e30 B"),
    ((*TRAIN, "--global-batch", "99999999999999999999"),
     "--global-batch 99999999999999999999: must be from 1 to 1,073,741,824 sequences"),
    ((*TRAIN, "--global-batch", "9e30T"), "accepted: at most 1,073,741,824 sequences"),
    ((*TRAIN, "--global-batch", "1P"), "with a suffix K, M, G or T"),
    ((*TRAIN, "--global-batch", "1e400M"), "with a suffix K, M, G or T"),
    ((*TRAIN, "--gpus", "99999999999999999999"),
     "--gpus 99999999999999999999: expected a whole number of at least 1 and at most 1,048,576"),
    ((*TRAIN, "--tp", "1048577"), "--tp 1048577: expected a whole number of at least 1 and at most 1,048,576"),
    (("serve", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "9223372036854775808"),
     "--gpus 9223372036854775808: expected a whole number of at least 1 and at most 1,048,576"),
    (("profile", "--tp", "1,99999999999999999999"), "from 1 to 1,048,576"),
])
def test_out_of_range_numbers_name_the_range(args, expected):
    assert expected in error_line(invoke(*args))


def test_train_tokens_zero_is_refused():
    line = error_line(invoke(*TRAIN, "--train-tokens", "0"))
    assert line == "error: --train-tokens 0: must be at least 1 token (write e.g. 15T)"


def test_a_number_with_too_many_digits_is_refused():
    line = error_line(invoke(*TRAIN, "--memory-headroom", "1" * 5000 + "B"))
    assert "--memory-headroom" in line and "more than 64 characters" in line


SERVE = ("serve", "--model", "8b", "--cluster", "dgx-h100", "--num-requests", "20")


@pytest.mark.parametrize(("args", "expected"), [
    (("--osl", "uniform:1,1e30"),
     "--osl uniform:1,1e30: lengths must be at most 16,777,216 tokens"),
    (("--osl", "lognormal:1e300,1"), "lengths must be at most 16,777,216 tokens"),
    (("--isl", "lognormal:4000,1e200"), "SIGMA must be at most 10"),
    (("--arrival", "gamma:cv=1e-300", "--rate", "4"), "with CV from 0.001 to 1000"),
    (("--arrival", "gamma:cv=1e300", "--rate", "4"), "with CV from 0.001 to 1000"),
    (("--export", ","), "--export ',': name at least one of vllm, sglang, trtllm"),
    (("--export", "vllm,nope"), "--export nope: not accepted; choose from vllm, sglang, trtllm"),
])
def test_serve_workload_ranges(args, expected):
    assert expected in error_line(invoke(*SERVE, *args))


@pytest.mark.parametrize(("lengths", "expected"), [
    ("normal:1e18,1", "--lengths normal:1e18,1: lengths must be at most 16,777,216 tokens"),
    ("normal:200000,1",
     "MEAN 200,000 tokens is longer than Llama 3.1 8B's context; accepted: lengths up to 131,072"),
    ("uniform:1,200000", "HIGH 200,000 tokens is longer"),
    ("lognormal:8192,1,max=200000", "max 200,000 tokens is longer"),
])
def test_train_lengths_are_checked_against_the_context_before_planning(lengths, expected):
    result = invoke("train", "--model", "8b", "--cluster", "frontier", "--gpus", "16",
                    "--lengths", lengths)
    assert expected in error_line(result)
    assert "global batch" not in result.stderr  # refused before the job and the search


# --- files ------------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(("name", "args", "expected"), [
    ("config.json", ("train", "--model", "{path}", "--cluster", "dgx-h100"),
     "not a Hugging Face config.json: nested too deeply to read"),
    ("cluster.yaml", ("train", "--model", "8b", "--cluster", "{path}"),
     "not a cluster YAML file: nested too deeply to read"),
    ("profile.yaml", ("train", "--model", "8b", "--cluster", "dgx-h100", "--profile", "{path}"),
     "not a profile: nested deeper than 100 levels"),  # libyaml would crash the interpreter
    ("profile.json", ("train", "--model", "8b", "--cluster", "dgx-h100", "--profile", "{path}"),
     "not a profile: nested too deeply to read"),
    ("plan.json", ("export", "{path}", "--to", "megatron"),
     "not a sysplan plan file: nested too deeply to read"),
    ("trace.jsonl", ("serve", "--model", "8b", "--cluster", "dgx-h100", "--trace", "{path}"),
     "line 1: nested too deeply to read"),
])
def test_deeply_nested_documents(tmp_path, name, args, expected):
    path = tmp_path / name
    path.write_text(DEEP if name != "config.json" else '{"a": ' + DEEP + "}")
    line = error_line(invoke(*(a.replace("{path}", str(path)) for a in args)))
    assert str(path) in line and expected in line


def test_a_yaml_profile_just_past_the_depth_limit(tmp_path):
    path = tmp_path / "profile.yaml"
    path.write_text("- " * 101 + "x\n")
    line = error_line(invoke("train", "--model", "8b", "--cluster", "dgx-h100",
                             "--profile", str(path)))
    assert "nested deeper than 100 levels" in line


@pytest.mark.parametrize("option", ["--model", "--cluster", "--profile"])
def test_a_name_longer_than_a_file_name_may_be(option):
    args = {"--model": "8b", "--cluster": "dgx-h100"} | {option: "a" * 5000}
    line = error_line(invoke("train", *(x for kv in args.items() for x in kv)))
    assert "aaaa" in line and "File name too long" not in line


def test_a_runs_csv_that_is_not_utf8(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_bytes(b"model,gpus,global_batch,seq_len,step_time_s\n"
                     b"llama2-7b,8,256,4096,1.5\xff\xfe\n")
    line = error_line(invoke("calibrate", str(path), "--cluster", "dgx-h100",
                             "-o", str(tmp_path / "out.yaml")))
    assert line == f"error: {path}: not a UTF-8 text CSV (byte 68: invalid start byte)"


@pytest.mark.parametrize("serving", [False, True])
def test_a_csv_field_over_the_csv_limit(tmp_path, serving):
    path = tmp_path / "runs.csv"
    path.write_text('model,gpus,global_batch,seq_len,step_time_s\n"' + "a" * 200_000 +
                    '",8,1,1,1\n')
    flag = ("--serving",) if serving else ()
    line = error_line(invoke("calibrate", *flag, str(path), "--cluster", "dgx-h100",
                             "-o", str(tmp_path / "out.yaml")))
    assert str(path) in line and "field larger than field limit" in line


# --- cluster YAML and config.json values -------------------------------------------------------

CLUSTER = """\
gpu: H100-SXM
gpus_per_node: 8
default_nodes: {nodes}
tiers:
  - {{name: NVLink, domain: node, bandwidth: 450GB/s, latency: 1us}}
  - {{name: IB, domain: cluster, bandwidth: 50GB/s, latency: 5us, oversubscription: {over}}}
"""


@pytest.mark.parametrize(("nodes", "over", "expected"), [
    (2, "inf", "tiers[1].oversubscription: 'inf' is not a ratio of at least 1 and at most 1000"),
    (2, ".inf", "tiers[1].oversubscription: inf is not a ratio of at least 1 and at most 1000"),
    (2, "1e400", "is not a ratio of at least 1 and at most 1000"),
    (99999999999999999999, 1, ("default_nodes: 99999999999999999999 is more than 131,072 nodes "
     "(1,048,576 GPUs at 8 per node, the most sysplan plans for)")),
])
def test_cluster_yaml_values_out_of_range(tmp_path, nodes, over, expected):
    path = tmp_path / "c.yaml"
    path.write_text(CLUSTER.format(nodes=nodes, over=over))
    assert expected in error_line(invoke("train", "--model", "8b", "--cluster", str(path)))


LLAMA = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32,
         "num_hidden_layers": 32, "intermediate_size": 11008, "vocab_size": 32000,
         "max_position_embeddings": 4096}


@pytest.mark.parametrize(("config", "expected"), [
    ({"model_type": "gpt2", "n_embd": 770, "n_head": 12, "n_layer": 12, "vocab_size": 50257,
      "n_positions": 1024}, "n_embd 770 is not a multiple of n_head 12 (model_type 'gpt2')"),
    (LLAMA | {"hidden_size": 4095},
     "hidden_size 4095 is not a multiple of num_attention_heads 32 (model_type 'llama')"),
    (LLAMA | {"num_key_value_heads": 5},  # a model-level check: no empty field, no "Value error"
     ".json: num_heads 32 is not a multiple of num_kv_heads 5 (model_type 'llama')"),
    (LLAMA | {"num_hidden_layers": 99999999999999999999},  # hung the planner
     "num_layers: Input should be less than or equal to 10000"),
    (LLAMA | {"max_position_embeddings": 99999999999999999999},
     "max_seq_len: Input should be less than or equal to 1073741824"),
])
def test_config_json_values(tmp_path, config, expected):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(config))
    assert expected in error_line(invoke("train", "--model", str(path), "--cluster", "dgx-h100"))


@pytest.mark.parametrize(("args", "expected"), [
    ((*TRAIN, "--seq-len", "99999999999999999999"), "at most 1,073,741,824"),  # OverflowError
    ((*TRAIN, "--top", "99999999999999999999"), ("--top 99999999999999999999: expected a whole "
     "number of at least 1 and at most 1,000")),  # hung
    ((*TRAIN, "--objective", "cost", "--train-tokens", "1T", "--gpu-hour-cost", "1e308"),
     "--gpu-cost 1e308: expected a positive number up to 1e12"),  # costs of $inf
    ((*SERVE, "--num-requests", "99999999999999999999"), "at most 1,000,000"),
    ((*SERVE, "--trials", "99999999999999999999"), "at least 0 and at most 1,000,000"),
    ((*SERVE, "--max-num-seqs", "99999999999999999999"), "at most 16,777,216"),
    ((*SERVE, "--concurrency", "9223372036854775808"), "at most 1,000,000"),  # was simulated
    (("profile", "--world", "99999999999999999999"), "at most 1,048,576"),
])
def test_more_options_out_of_range(args, expected):
    assert expected in error_line(invoke(*args))


def serve_trace_error(tmp_path, rows: str) -> str:
    """The error line of `sysplan serve` on a trace CSV of ``rows`` (after its header)."""
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n" + rows)
    return error_line(invoke("serve", "--model", "8b", "--cluster", "dgx-h100",
                             "--trace", str(path)))


def test_trace_lengths_are_bounded(tmp_path):
    line = serve_trace_error(tmp_path, "0,1e30,10\n")
    assert line.endswith("line 2: input_tokens '1e30' is not a positive integer (at most "
                         "16,777,216 tokens)")


def test_length_file_lengths_are_bounded(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("1e30\n100\n")
    line = error_line(invoke("train", "--model", "8b", "--cluster", "frontier", "--gpus", "16",
                             "--lengths", str(path)))
    assert line.endswith("line 1: length '1e30' is not a positive whole number of tokens (at "
                         "most 16,777,216)")


@pytest.mark.parametrize(("cells", "expected"), [
    ("99999999999999999999,256,4096,1.5,0",
     "runs.csv:2: gpus '99999999999999999999' is out of range (at most 1,073,741,824)"),
    ("8,256,4096,inf,0", "runs.csv:2: step_time_s 'inf' is out of range (at most 1e12)"),
    ("8,256,4096,1.5,x", "runs.csv:2: zero 'x' is not a number"),  # was int()'s message
    ("8,256,4096,1.5,7", "runs.csv:2: zero: Input should be less than or equal to 3"),
    ("8,99999999999999999999,4096,1.5,0",
     "global_batch '99999999999999999999' is out of range (at most 1,073,741,824)"),
])
def test_runs_csv_cells(tmp_path, cells, expected):
    path = tmp_path / "runs.csv"
    path.write_text(f"model,gpus,global_batch,seq_len,step_time_s,zero\nllama2-7b,{cells}\n")
    line = error_line(invoke("calibrate", str(path), "--cluster", "dgx-h100",
                             "-o", str(tmp_path / "out.yaml")))
    assert line.endswith(expected)  # pydantic's "For further information visit ..." was shown


@pytest.fixture(scope="module")
def saved_plan(tmp_path_factory):
    """A `sysplan train --json` document to corrupt."""
    result = invoke("train", "--model", "8b", "--cluster", "dgx-h100", "--top", "1", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(("where", "field", "expected"), [
    ("parallel", "tp", ("plan rank 1: parallel.tp 99999999999999999999 is more than 1,048,576, "
     "the most GPUs sysplan plans for")),
    ("job", "seq_len", "job.seq_len 99999999999999999999 is more than 1,073,741,824"),
])
def test_plan_file_numbers_out_of_range(tmp_path, saved_plan, where, field, expected):
    document = json.loads(json.dumps(saved_plan))
    block = document["plans"][0]["parallel"] if where == "parallel" else document["job"]
    block[field] = 99999999999999999999  # tp overflowed int64 in the exporters
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document))
    line = error_line(invoke("export", str(path), "--to", "megatron", "-o", str(tmp_path / "o")))
    assert line == f"error: {path}: {expected}"


def _bundled_profile_with(tmp_path, change) -> str:
    import yaml

    from sysplan.profiles.loader import BUNDLED

    document = yaml.safe_load((BUNDLED / "h100-sxm.yaml").read_text())
    change(document)
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.mark.parametrize(("change", "cluster", "expected"), [
    (lambda d: d["gemm"]["rows"][0].__setitem__(3, float("inf")), "dgx-h100",
     "gemm.rows[0][3]: inf must be a positive number (at most 1e30)"),  # was accepted
    (lambda d: d["gemm"].__setitem__("dtype", "fp4"), "dgx-h100",
     "gemm.dtype: Input should be 'fp32', 'tf32', 'bf16', 'fp16' or 'fp8'"),  # KeyError
    (lambda d: d["gemm"].__setitem__("dtype", "fp8"), "dgx-a100",  # KeyError in GPU.peak
     ("its GEMM table is fp8 and A100-SXM4-80GB lists no fp8 peak; accepted for it: a profile "
     "timed in bf16, fp16, fp32, tf32")),
])
def test_profile_values(tmp_path, change, cluster, expected):
    path = _bundled_profile_with(tmp_path, change)
    line = error_line(invoke("train", "--model", "8b", "--cluster", cluster, "--gpus", "8",
                             "--profile", path))
    assert expected in line


@pytest.mark.parametrize(("cells", "expected"), [
    ("inf,1000,100,100,inf,1000", ("s.csv:2: tp 'inf': expected a positive whole number up to "
     "10^7")),  # int(inf) raised OverflowError
    ("1,1000,100,100,inf,1e400", ("output_tok_per_s '1e400': expected a positive number up to "
     "10^12")),  # inf was taken as a measurement
])
def test_serving_runs_csv_cells(tmp_path, cells, expected):
    path = tmp_path / "s.csv"
    path.write_text("model,tp,input_len,output_len,num_requests,request_rate,output_throughput\n"
                    f"8b,{cells}\n")
    line = error_line(invoke("calibrate", "--serving", str(path), "--cluster", "dgx-h100",
                             "-o", str(tmp_path / "o.yaml")))
    assert line.endswith(expected)


def test_an_inline_gpu_with_a_zero_peak(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "gpu: {name: X, vendor: nvidia, gpu_class: hopper, memory: 80GiB, memory_bandwidth: "
        "3TB/s, power: 700W, peak: {bf16: 0FLOP/s}}\n"
        + CLUSTER.format(nodes=2, over=1).split("\n", 1)[1])
    line = error_line(invoke("train", "--model", "8b", "--cluster", str(path)))
    assert line.endswith("gpu: peak bf16: 0.0 is not a positive FLOP rate (write e.g. "
                         "989TFLOP/s)")


@pytest.mark.parametrize(("lengths", "expected"), [
    # ~105k sequences per step: the mix search ran out of memory (MemoryError or a kill)
    ("40", ("--lengths 40: a step of 4,194,304 tokens would hold about 104,858 sequences of 40 "
     "tokens on average; accepted: at most 16,384 per step (a mean length of at least 256 "
     "tokens, or a smaller --global-batch)")),
    ("lognormal:8192,10", "holds more than 16,384 sequences as sampled"),  # clipped far below
])
def test_train_lengths_with_too_many_sequences_per_step(lengths, expected):
    result = invoke("train", "--model", "8b", "--cluster", "frontier", "--gpus", "16",
                    "--lengths", lengths)
    assert expected in error_line(result)


def test_serve_rate_overflowing_to_inf_is_refused():
    line = error_line(invoke(*SERVE, "--rate", "1e400"))  # was read as inf (offline)
    assert line == ("error: --rate 1e400: expected requests per second above 0 and at most 1e9 "
                    "(e.g. 4.5), or inf")


@pytest.mark.parametrize(("value", "shown"), [(".inf", "finite"), ("-3", "greater than or equal to 0"),
                                              ("2", "less than or equal to 1")])
def test_a_profile_overhead_must_be_a_finite_second_count(tmp_path, value, shown):
    path = tmp_path / "bad.yaml"
    path.write_text("schema_version: '1.0'\nname: bad\nbase: h100-sxm\n"
                    f"overhead: {{forward_s: {value}, backward_s: 1.0e-5}}\n")
    line = error_line(invoke("train", "--model", "8b", "--cluster", "dgx-h100",
                             "--profile", str(path)))
    assert "overhead.forward_s" in line and shown in line


@pytest.mark.parametrize("value", ["foo", "all-to-all"])
def test_an_unknown_moe_dispatcher(value):
    line = error_line(invoke("train", "--model", "qwen3-30b-a3b", "--cluster", "dgx-h100",
                             "--moe-dispatcher", value))
    assert f"--moe-dispatcher {value}" in line and "alltoall, allgather, flex" in line


# --- contradicting serve options and --storage (refused before any simulation) ----------------


@pytest.mark.parametrize(("args", "expected"), [
    (("--isl", "4000"), "--trace {trace} with --isl: the trace gives every request's lengths"),
    (("--isl", "abc"), "with --isl"),  # was accepted: --isl was never read
    (("--osl", "500"), "with --osl"),
])
def test_trace_with_isl_or_osl(tmp_path, args, expected):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n0,100,10\n")
    result = invoke(*SERVE, "--trace", str(trace), *args)
    assert expected.format(trace=trace) in error_line(result)
    assert "note:" not in result.stderr  # refused before the model and the simulation


@pytest.mark.parametrize(("args", "expected"), [
    (("--prefill-tp", "2"), ("--prefill-tp 2: pins a disaggregated prefill/decode pool, but no "
                             "--disagg was given; add --disagg")),
    (("--no-disagg", "--decode-replicas", "2"), "but --no-disagg was given"),
])
def test_pool_pins_without_disagg(args, expected):
    assert expected in error_line(invoke(*SERVE, *args))


@pytest.mark.parametrize(("url", "expected"), [
    ("foo://x", "--storage foo://x: expected sqlite:///FILE or postgresql://USER:PASS@HOST/DB"),
    ("sqlite:///", "expected sqlite:///FILE"),
    ("postgresql://nobody@127.0.0.1:1/x", "--storage postgresql://nobody@127.0.0.1:1/x: cannot"),
    ("sqlite:///{tmp}/not-a-db.db", "file is not a database"),
    ("sqlite:///{tmp}/no/such/folder/x.db", "unable to open database file"),
])
def test_a_storage_that_cannot_be_opened(tmp_path, url, expected):
    (tmp_path / "not-a-db.db").write_text("not a database\n")
    url = url.replace("{tmp}", str(tmp_path))
    result = invoke(*SERVE, "--storage", url)
    assert expected in error_line(result)
    assert "note:" not in result.stderr  # before any simulation (it ran, then ignored the URL)


@pytest.mark.parametrize(("config", "expected"), [
    (LLAMA | {"model_type": [1]}, "unsupported model_type [1]"),  # TypeError: unhashable
    ({k: v for k, v in LLAMA.items() if k != "model_type"} | {"architectures": {"a": 1}},
     "unsupported model_type None"),  # KeyError: 0
])
def test_config_json_model_type_of_the_wrong_type(tmp_path, config, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert expected in error_line(invoke("train", "--model", str(path), "--cluster", "dgx-h100"))


@pytest.mark.parametrize(("args", "expected"), [
    (("--osl", "200000"), ("--isl 4000 --osl 200000: requests of 204,000 tokens (input plus "
                           "output) are longer than Llama 3.1 8B's context; accepted: input plus "
                           "output up to 131,072 tokens")),  # simulated for minutes
    (("--isl", "uniform:1000,131000", "--osl", "500"), "requests of 131,500 tokens"),
])
def test_serve_lengths_longer_than_the_context(args, expected):
    assert expected in error_line(invoke(*SERVE, *args))


def test_a_trace_request_longer_than_the_context(tmp_path):
    line = serve_trace_error(tmp_path, "0,100,10\n1,100000,40000\n")
    assert line.endswith("a request of 140,000 tokens (input plus output) is longer than "
                         "Llama 3.1 8B's context; accepted: requests up to 131,072 tokens")


@pytest.mark.parametrize(("args", "shown"), [
    ((*TRAIN, "--gpu-hour-cost", "\u0663"), "\u0663: expected a positive number"),  # read as 3
    ((*SERVE, "--rate", "\u0663"), "--rate \u0663: expected requests per second"),
    ((*SERVE, "--rate", "\uff11"), "--rate \uff11"),  # a full-width 1
    ((*SERVE, "--isl", "\u0663000"), "--isl \u0663000: expected TOKENS"),
    ((*SERVE, "--arrival", "gamma:cv=\u0662"), "with CV from 0.001 to 1000"),
    ((*SERVE, "--prefix-cache-hit-rate", "\u0660"), "expected a share of each prompt"),
])
def test_non_ascii_digits_in_float_options(args, shown):
    assert shown in error_line(invoke(*args))


def test_a_length_file_with_non_ascii_digits(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("8192\n\u0664\u0660\u0669\u0666\n")
    line = error_line(invoke("train", "--model", "8b", "--cluster", "frontier", "--gpus", "16",
                             "--lengths", str(path)))
    assert "line 2" in line


@pytest.mark.parametrize("serving", [False, True])
def test_a_runs_csv_with_a_short_row(tmp_path, serving):
    path = tmp_path / "runs.csv"
    header = ("label,model,engine,tp,input_len,output_len,num_requests,request_rate,"
              "output_throughput" if serving else
              "label,model,gpus,tp,pp,global_batch,seq_len,step_time_s")
    path.write_text(f"{header}\nrun\n")  # AttributeError: None has no strip (the model cell)
    flag = ("--serving",) if serving else ()
    line = error_line(invoke("calibrate", *flag, str(path), "--cluster", "dgx-h100",
                             "-o", str(tmp_path / "o.yaml")))
    assert "model" in line


def test_written_files_follow_the_umask(tmp_path):
    import os

    from sysplan.profiles.loader import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "p.yaml", "x: 1\n")  # profiles, calibrate overlays, clusters
    finally:
        os.umask(old)
    assert (tmp_path / "p.yaml").stat().st_mode & 0o777 == 0o644  # mkstemp's 0600 before


def test_an_output_path_that_is_a_folder(tmp_path):
    from sysplan.core.errors import InputError
    from sysplan.profiles.loader import write_atomic

    (tmp_path / "out.yaml").mkdir()
    with pytest.raises(InputError, match="out.yaml: cannot write"):
        write_atomic(tmp_path / "out.yaml", "x: 1\n")


def test_runs_csv_layouts_must_cover_their_gpus(tmp_path):
    """A row whose degrees do not multiply to its GPUs (pp 201,281 on 8 GPUs made the fit
    price 201,281 stages for minutes; found by benchmarks/fuzz.py) is refused on reading."""
    rows = [("label,model,gpus,tp,pp,cp,sequence_parallel,zero,micro_batch,global_batch,"
             "seq_len,recompute,step_time_s")]
    rows += [f"r{i},8b,8,1,1,1,0,1,1,64,8192,none,{6 + i}" for i in range(4)]
    rows.append("bad,8b,8,1,201281,1,0,1,1,64,8192,none,7")
    path = tmp_path / "runs.csv"
    path.write_text("\n".join(rows) + "\n")
    line = error_line(invoke("calibrate", str(path), "--cluster", "dgx-h100",
                             "-o", str(tmp_path / "o.yaml")))
    assert line.endswith(":6: tp 1 x pp 201281 x cp 1 x dp 1 is 201,281 GPUs, not the row's "
                         "gpus 8; accepted: degrees whose product is gpus")
