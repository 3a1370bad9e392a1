"""The bundled reference executor: runs a parallel layout of a tiny GPT at small scale.

``runner.run_layout`` spawns one torch.distributed process per rank (gloo on CPU, NCCL on
GPUs), trains a tiny decoder (``model.TinyConfig``) under tensor, sequence, context, pipeline
and data parallelism with ZeRO, and reports per-step losses, step times, communication time
and peak memory. Every layout starts from the same weights and sees the same data, so its
losses must match the single-process ``runner.run_reference`` run.

This package file must not import torch: torch is an optional extra and is imported only by
the modules below it.
"""
