"""``sysplan train --pp-layout``: a pinned pipeline layout in Megatron-LM's notation.

Megatron's ``--pipeline-model-parallel-layout`` names what each model chunk holds, chunks in
schedule order (chunk ``v * pp + r`` is virtual stage ``v`` of rank ``r``) separated by ``|``:
``E`` the embedding, ``t`` a transformer layer, ``m`` a multi-token-prediction layer, ``L``
the final norm, LM head and loss; ``x*n`` repeats ``x`` and ``(...)*n`` a group. DeepSeek-V3's
recipes pin e.g. ``Et*4|(t*4|)*14tmL`` (PP 2 x VPP 8: the MTP module and the loss get the last
chunk with one layer). sysplan prices the layers each rank holds with the same per-layer costs
the stage DP reads (``planners.stage_costs``) and exports the layout as given.
"""

from __future__ import annotations

import re

from sysplan.core.errors import InputError

#: What a layout may name: embedding, transformer layer, MTP layer, loss (Megatron-LM
#: megatron/core/transformer/pipeline_parallel_layer_layout.py, parse_str_to_list)
LAYOUT_SYMBOLS = "EtmL"
_GROUP = re.compile(r"\(([^()]*)\)\*(\d+)")
_REPEAT = re.compile(r"([EtmL|])\*(\d+)")
#: Symbols a written-out layout may hold (models have hundreds of layers, not millions)
MAX_SYMBOLS = 100_000


def expand(text: str) -> str:
    """The layout with every ``(...)*n`` and ``x*n`` written out; InputError past
    ``MAX_SYMBOLS``."""
    def repeat(match: re.Match) -> str:
        part, count = match.group(1), int(match.group(2))
        if len(part) * count > MAX_SYMBOLS:
            shown = part if len(part) <= 40 else part[:37] + "..."
            raise InputError(f"--pp-layout {text}: {shown}*{count} writes out more than "
                             f"{MAX_SYMBOLS:,} symbols; accepted: one symbol per layer")
        return part * count

    out = text.replace(" ", "").replace(",", "")  # Megatron drops commas as cosmetic
    while len(out) <= MAX_SYMBOLS:
        grouped = _GROUP.sub(repeat, out)
        if grouped == out:
            out = _REPEAT.sub(repeat, out)
            break
        out = grouped
    if len(out) > MAX_SYMBOLS:
        raise InputError(f"--pp-layout {text}: writes out more than {MAX_SYMBOLS:,} symbols; "
                         "accepted: one symbol per layer")
    return out


def parse_pp_layout(text: str, num_layers: int, mtp_layers: int, pp: int | None,
                    vpp: int | None) -> tuple[int, ...]:
    """Transformer layers per chunk of the layout ``text`` (schedule order), checked against
    the model and the pinned ``pp`` (required) and ``vpp``; InputError naming what is wrong."""
    flag = f"--pp-layout {text}"
    body = expand(text)
    wrong = sorted(set(body) - set(LAYOUT_SYMBOLS + "|"))
    if wrong or not body:
        raise InputError(f"{flag}: cannot read {''.join(wrong) or 'an empty layout'}; accepted: "
                         "E (embedding), t (layer), m (MTP layer), L (loss), | between chunks, "
                         "x*n and (...)*n to repeat, e.g. Et*4|(t*4|)*14tmL")
    chunks = body.split("|")
    if pp is None:
        raise InputError(f"{flag}: needs --pp (the layout's {len(chunks)} chunks are PP x VPP)")
    if len(chunks) % pp:
        raise InputError(f"{flag}: {len(chunks)} chunks do not split over --pp {pp} ranks "
                         f"(accepted: PP x VPP chunks)")
    if vpp is not None and vpp * pp != len(chunks):
        raise InputError(f"{flag}: {len(chunks)} chunks, but --pp {pp} x --vpp {vpp} = "
                         f"{pp * vpp}")
    if body.count("E") != 1 or "E" not in chunks[0]:
        raise InputError(f"{flag}: the embedding E must appear once, in the first chunk")
    if body.count("L") != 1 or not chunks[-1].endswith("L"):
        raise InputError(f"{flag}: the loss L must appear once, at the end of the last chunk")
    if body.count("m") != mtp_layers or any("m" in c for c in chunks[:-1]):
        raise InputError(f"{flag}: the model has {mtp_layers} multi-token-prediction layers; "
                         f"accepted: that many m, in the last chunk")
    counts = tuple(c.count("t") for c in chunks)
    if sum(counts) != num_layers:
        raise InputError(f"{flag}: places {sum(counts)} layers (t); the model has {num_layers}")
    per_rank = rank_totals(counts, pp)
    if min(per_rank) < 1:
        raise InputError(f"{flag}: pipeline rank {per_rank.index(0)} holds no layer (t); "
                         "every rank needs at least one")
    return counts


def rank_totals(chunks: tuple[int, ...], pp: int) -> tuple[int, ...]:
    """Layers each pipeline rank holds: chunk ``v * pp + r`` is on rank ``r``."""
    return tuple(sum(chunks[r::pp]) for r in range(pp))
