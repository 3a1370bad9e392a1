"""Pictures of a `sysplan serve` result, drawn from its JSON document (one engine's
``result_document``: ``plans``, ``explored``, ``latency_curve``, ``slo_bounds``).

* the Pareto frontier: output tokens/s per GPU against tokens/s per user, and against TTFT
  p90, for every deployment the search simulated (aggregated and disaggregated, by TP), the
  frontier joined, the SLO lines drawn and the chosen deployment marked;
* the chosen deployment's latency percentiles against the offered rate (when the result
  carries a ``latency_curve``: `sysplan serve --plot` simulates it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sysplan.plots import new_figure

TP_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")


def frontier(points: Sequence[tuple[float, float]], higher_x: bool = True
             ) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (higher y; higher x, or lower when
    ``higher_x`` is False), sorted by x."""
    sign = 1.0 if higher_x else -1.0
    ordered = sorted(points, key=lambda p: (-sign * p[0], -p[1]))
    kept, best_y = [], float("-inf")
    for x, y in ordered:
        if y > best_y:
            kept.append((x, y))
            best_y = y
    return sorted(kept)


def _chosen(document: Mapping[str, Any]) -> Mapping[str, Any] | None:
    plans = document.get("plans") or []
    return plans[0] if plans else None


def _bound(document: Mapping[str, Any], metric: str) -> Mapping[str, Any] | None:
    for slo in document.get("slo_bounds") or []:
        if slo["metric"] == metric:
            return slo
    return None


def pareto_figure(document: Mapping[str, Any]) -> Any:
    """Output tokens/s per GPU against tokens/s per user (left) and against TTFT p90 (right)."""
    points = [p for p in document.get("explored") or []
              if p.get("output_tokens_per_s_per_gpu")]
    figure = new_figure(10.0, 4.2)
    left, right = figure.subplots(1, 2)
    tps = sorted({p["tp"] for p in points})
    for axis, key, higher in ((left, "tokens_per_s_per_user", True),
                              (right, "ttft_p90_s", False)):
        usable = [p for p in points if p.get(key)]
        for i, tp in enumerate(tps):
            for disaggregated, marker in ((False, "o"), (True, "^")):
                group = [p for p in usable if p["tp"] == tp
                         and p["disaggregated"] == disaggregated]
                if not group:
                    continue
                kind = "disaggregated" if disaggregated else "aggregated"
                colour = TP_COLOURS[i % len(TP_COLOURS)]
                for met in (True, False):
                    chosen_group = [p for p in group if bool(p["meets_slo"]) == met]
                    if not chosen_group:
                        continue
                    axis.scatter([_x(p, key) for p in chosen_group],
                                 [p["output_tokens_per_s_per_gpu"] for p in chosen_group],
                                 marker=marker, s=22, alpha=0.8, edgecolors=colour,
                                 facecolors=colour if met else "none",
                                 label=f"tp{tp} {kind}" + (" (decode tp)" if disaggregated
                                                            else "")
                                 + ("" if met else ", SLO missed"))
        edge = frontier([(_x(p, key), p["output_tokens_per_s_per_gpu"]) for p in usable
                         if p["meets_slo"]], higher_x=higher)
        if edge:
            axis.plot(*zip(*edge, strict=True), "-", color="#333333", linewidth=1,
                      label="Pareto frontier (SLO met)")
        _slo_line(axis, document, key)
        chosen = _chosen(document)
        if chosen is not None:
            x = _chosen_x(chosen, key)
            if x is not None:
                axis.plot([x], [chosen["output_tokens_per_s_per_gpu"]], "*", markersize=15,
                          color="#D55E00", label="chosen deployment", zorder=5)
    left.set_xlabel("tokens/s per user (1 / median TPOT)")
    right.set_xlabel("TTFT p90 (ms)")
    for axis in (left, right):
        axis.set_ylabel("output tokens/s per GPU")
    handles: dict[str, Any] = {}
    for axis in (left, right):
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    right.legend(list(handles.values()), list(handles), fontsize=7, loc="upper left",
                 bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.suptitle(f"{document.get('model')} on {document.get('cluster')}, engine "
                    f"{document.get('engine')}: {len(points)} simulated deployments",
                    x=0.02, ha="left")
    return figure


def _x(point: Mapping[str, Any], key: str) -> float:
    return point[key] * 1e3 if key == "ttft_p90_s" else point[key]


def _chosen_x(plan: Mapping[str, Any], key: str) -> float | None:
    latency = plan.get("latency_s") or {}
    if key == "ttft_p90_s":
        value = (latency.get("ttft") or {}).get("p90")
        return None if value is None else value * 1e3
    tpot = (latency.get("tpot") or {}).get("p50")
    return 1.0 / tpot if tpot else None


def _slo_line(axis: Any, document: Mapping[str, Any], key: str) -> None:
    """The TPOT bound as tokens/s per user (left), the TTFT bound in ms (right)."""
    if key == "ttft_p90_s":
        slo = _bound(document, "ttft")
        if slo is not None:
            axis.axvline(slo["bound_s"] * 1e3, color="#D55E00", linestyle="--",
                         label=f"SLO ttft p{slo['percentile']:g} <= "
                         f"{slo['bound_s'] * 1e3:g} ms")
        return
    slo = _bound(document, "tpot") or _bound(document, "itl")
    if slo is not None:
        axis.axvline(1.0 / slo["bound_s"], color="#D55E00", linestyle=":",
                     label=f"SLO {slo['metric']} p{slo['percentile']:g} <= "
                     f"{slo['bound_s'] * 1e3:g} ms")


def latency_figure(document: Mapping[str, Any]) -> Any:
    """TTFT, TPOT and end-to-end p50/p90/p99 of the chosen deployment against offered rate."""
    rows = document.get("latency_curve") or []
    figure = new_figure(10.0, 3.6)
    axes = figure.subplots(1, 3)
    rates = [row["rate_rps"] for row in rows]
    for axis, metric in zip(axes, ("ttft", "tpot", "e2e"), strict=True):
        for percentile, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
            values = [(row[metric][percentile] or float("nan")) * 1e3 for row in rows]
            axis.plot(rates, values, style, label=percentile, markersize=4)
        slo = _bound(document, metric)
        if slo is not None:
            axis.axhline(slo["bound_s"] * 1e3, color="#D55E00", linestyle="--",
                         label=f"SLO {metric} p{slo['percentile']:g}")
        chosen = _chosen(document)
        rate = chosen and (chosen.get("max_rate_rps") or chosen.get("rate_rps"))
        if rate:
            axis.axvline(rate, color="#999999", linewidth=0.8, label="chosen rate")
        axis.set_xlabel("offered requests/s")
        axis.set_ylabel(f"{metric.upper()} (ms)")
        axis.legend(fontsize=7, frameon=False)
    chosen = _chosen(document)
    name = _deployment_text(chosen) if chosen else ""
    figure.suptitle(f"latency against offered rate: {name}", x=0.02, ha="left")
    return figure


def _deployment_text(plan: Mapping[str, Any]) -> str:
    layout = plan["layout"]
    if layout.get("disaggregated"):
        pre, dec = layout["prefill"], layout["decode"]
        return (f"prefill tp{pre['tp']} x{pre['replicas']} + decode tp{dec['tp']} "
                f"x{dec['replicas']}")
    return f"tp{layout['tp']} pp{layout['pp']} x{layout['replicas']}"


def figures(document: Mapping[str, Any]) -> dict[str, Any]:
    """The pictures that apply to one engine's serve document, by file stem."""
    out = {}
    if document.get("explored"):
        out["serve-pareto"] = pareto_figure(document)
    if document.get("latency_curve"):
        out["serve-latency"] = latency_figure(document)
    return out
