"""The serving factors every GPU starts from, fitted once on published runs of one GPU.

The serving cost model is physics (rooflines over measured or datasheet efficiencies) plus
five factors that no datasheet gives: how far below the GEMM table and the HBM rate a serving
engine's kernels run, its fixed time per iteration, per TP all-reduce and per request. They
are the same on every GPU (no factor per GPU, model or row): ``DEFAULT`` was fitted by
``python benchmarks/serving_accuracy.py --fit-on H100`` on the H100 rows of the published
offline and online runs and is judged there on the H200, GH200, A100 and L40S rows. A profile
whose calibration has ``serve_fitted_on`` set (``sysplan calibrate --serving``) replaces them.
All of them apply over the raw measured tables: a profile's training factors (fitted to
whole training steps) are not serving's.
"""

from __future__ import annotations

from sysplan.profiles.schema import Calibration

SERVE_FIELDS = ("serve_gemm_scale", "serve_memory_scale", "serve_iteration_overhead_s",
                "serve_collective_latency_s", "serve_request_overhead_s", "serve_fitted_on")

DEFAULT = Calibration(
    serve_gemm_scale=0.9459, serve_memory_scale=0.7532, serve_iteration_overhead_s=9.378e-4,
    serve_collective_latency_s=2.245e-05, serve_request_overhead_s=6.441e-3,
    serve_fitted_on="benchmarks/serving_accuracy.py --fit-on H100: 61 H100 rows (33 offline "
    "trtllm-bench v0.17, 6 max-load and 22 unsaturated online TensorRT-LLM v0.14); judged on "
    "the 49 offline rows of H200, GH200, A100 and L40S (MAPE 14.7 % -> 8.4 %) and the 23 "
    "online H200 rows (TTFT 37.7 % -> 8.3 %, ITL 32.9 % -> 10.0 %)")


#: Factors fitted to training steps (``sysplan calibrate``, a bundled profile's end-to-end
#: training calibration). Serving never reads them: its own factors, DEFAULT's and those of
#: ``sysplan calibrate --serving``, are fitted over the raw tables.
TRAINING_FIELDS = ("gemm_scale", "attention_scale", "elementwise_scale", "comm_scale_node",
                   "comm_scale_network", "overlap")


def serving_calibration(calibration: Calibration) -> Calibration:
    """The serving factors ``calibration`` carries (``serve_fitted_on`` set), else the
    default ones; the training factors at 1 either way."""
    source = calibration if calibration.serve_fitted_on else DEFAULT
    update = {k: getattr(source, k) for k in SERVE_FIELDS}
    update.update({k: getattr(Calibration(), k) for k in TRAINING_FIELDS})
    return calibration.model_copy(update=update)
