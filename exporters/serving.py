"""Serving exports: a ``Deployment`` in, each engine's launch files out (issue #6, Output).

``serve_files(request, engines)`` is what ``sysplan serve --export vllm|sglang|trtllm -o DIR``
calls (then ``exporters.base.write_files``). Each engine maps to one exporter in
``SERVE_EXPORTERS``; every exporter keeps the shared contract of ``exporters.base``: it refuses a
deployment its engine cannot run with an ``InputError`` naming the feature (exit 2), every file
says where it came from (``serve_provenance_lines`` as comments), and it is deterministic.

Files: ``serve/vllm/launch.sh``, ``serve/sglang/launch.sh``, ``serve/trtllm/launch.sh`` and
``serve/trtllm/extra.yaml``. Engine versions: ``ENGINE_VERSIONS``; every flag or key written is
in the engine's list under tests/data/runtime-names/ (tests/test_serve_exporters.py).
"""

from __future__ import annotations

from collections.abc import Callable

from sysplan.core.errors import InputError
from sysplan.exporters import serve_sglang, serve_trtllm, serve_vllm
from sysplan.exporters.base import ExportFile
from sysplan.exporters.serve_common import (
    ACTIVATION_RESERVE_BYTES,
    ENGINE_VERSIONS,
    ServeExportRequest,
    default_model_path,
    serve_provenance,
    serve_provenance_lines,
    sglang_mem_fraction_static,
    trtllm_free_gpu_memory_fraction,
    vllm_gpu_memory_utilization,
)

ServeExporter = Callable[[ServeExportRequest], list[ExportFile]]

#: Engine name -> exporter.
SERVE_EXPORTERS: dict[str, ServeExporter] = {
    "vllm": serve_vllm.export,
    "sglang": serve_sglang.export,
    "trtllm": serve_trtllm.export,
}

__all__ = ["ACTIVATION_RESERVE_BYTES", "ENGINE_VERSIONS", "SERVE_EXPORTERS", "ServeExportRequest",
           "default_model_path", "serve_files", "serve_provenance", "serve_provenance_lines",
           "sglang_mem_fraction_static", "trtllm_free_gpu_memory_fraction",
           "vllm_gpu_memory_utilization"]


def serve_files(request: ServeExportRequest, engines: list[str]) -> list[ExportFile]:
    """Every named engine's files; InputError for an unknown engine or one that refuses (so
    nothing is written unless every engine accepts the deployment)."""
    files: list[ExportFile] = []
    for engine in engines:
        if engine not in SERVE_EXPORTERS:
            raise InputError(f"--export {engine}: not accepted; choose from "
                             f"{', '.join(SERVE_EXPORTERS)}")
        files += SERVE_EXPORTERS[engine](request)
    return files
