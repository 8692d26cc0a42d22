"""Pipeline-stage registers and lane helpers shared by the parser's components.

values (signals, or lists of signals per lane) ─▶ :func:`register_stage` ─▶ registers of the same shapes, moved on ``ce``
"""

from __future__ import annotations

from amaranth import Const, Mux, Signal

__all__ = ["register_stage", "onehot_index"]


def register_stage(m, ce, name, values):
    """One pipeline stage: each value (or list of values) into registers of its shape, moved on ``ce``.

    Returns a dict with the same keys: a register for a value, a list of registers for a list. Registers are named
    ``<name>_<key>`` (``<name>_<key><k>`` for list element k).
    """
    regs = {}
    for key, v in values.items():
        many = isinstance(v, list)
        new = [Signal(x.shape(), name=f"{name}_{key}{k if many else ''}") for k, x in enumerate(v if many else [v])]
        with m.If(ce):
            m.d.sync += [r.eq(x) for r, x in zip(new, v if many else [v])]
        regs[key] = new if many else new[0]
    return regs


def onehot_index(onehot):
    """The number of the set lane of a one-hot (or empty: 0) mask, as an OR of constants."""
    acc = Const(0, range(len(onehot)))
    for k in range(1, len(onehot)):
        acc = acc | Mux(onehot[k], k, 0)
    return acc
