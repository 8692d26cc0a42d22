"""A block with a register on every port, for out-of-context timing (``wirespeed build --block``).

top-level port ─▶ flip-flop ─▶ block input; block output ─▶ flip-flop ─▶ top-level port

Every path a place-and-route tool then times starts and ends at a flip-flop inside the design, so the reported Fmax is
the block's own, not that of pins or of whatever would drive it. Each top-level port is named after the block's port
path (``i_stream__payload__data``), with the same direction and width.
"""

from __future__ import annotations

from amaranth import Module, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisteredPorts"]


def _name(path) -> str:
    return "__".join(str(part) for part in path)


class RegisteredPorts(wiring.Component):
    """``block`` with one register stage on each of its ports (a ``wiring.Component``; its submodule ``block``)."""

    def __init__(self, block: wiring.Component):
        self.block = block
        self._ports = [(path, member.flow, value) for path, member, value in block.signature.flatten(block)]
        members = {}
        for path, flow, value in self._ports:
            members[_name(path)] = (In if flow == In else Out)(Shape.cast(value.shape()))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = self.block
        for path, flow, inner in self._ports:
            outer = getattr(self, _name(path))
            stage = Signal(Shape.cast(inner.shape()), name=f"reg_{_name(path)}")
            if flow == In:
                m.d.sync += stage.eq(outer)
                m.d.comb += inner.eq(stage)
            else:
                m.d.sync += stage.eq(inner)
                m.d.comb += outer.eq(stage)
        return m
