"""A block on its own: its own AXI4-Lite target and register bank, for tests, the bench and single-block designs.

AXI4-Lite (``s_axil``) ─▶ :class:`~.axil.AXI4LiteTarget` ─▶ :class:`~.regbank.RegisterBank` (the block's map at
offset 0) ─▶ ``block.regs``; every other member of the block's signature is a port of the wrapper, with the same
name and direction, so the generated Verilog has the block's port names (``i_req__valid``, ``o_desc__payload``,
...) and ``s_axil__*``.

    Standalone(HeaderParser(8), parser_regmap())
    Standalone(RateLimiter(params, 16), limiter_regmap().with_resets(limiter_resets(params)))
    Standalone(Telemetry(), telemetry_regmap(), taps={"o_snapshot": ("ctrl", "snapshot")})
"""

from __future__ import annotations

from typing import Mapping

from amaranth import Module, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axil import AXI4LiteSignature, AXI4LiteTarget
from .regbank import RegisterBank, hw_name, hw_port, hw_signature
from .regmap import RegMap

__all__ = ["Standalone", "standalone_addr_width"]

#: The member of a block's signature that takes the register bank's ``hw`` side.
REGS = "regs"


def standalone_addr_width(regmap: RegMap) -> int:
    """``s_axil``'s address width for ``regmap`` at offset 0: at least 12 bits (a 4 KiB window)."""
    return max(12, (regmap.size - 1).bit_length())


def _ports(signature: wiring.Signature) -> list:
    """Every port member of ``signature`` as (path, flow, shape, init): what two ``hw`` signatures must agree on
    (:class:`~.regbank.MemoryPort` signatures compare by identity, so the signatures themselves are not compared)."""
    return [(path, member.flow, Shape.cast(member.shape), member.init)
            for path, member in signature.members.flatten() if member.is_port]


class Standalone(wiring.Component):
    """``block`` with its own AXI4-Lite register bank (``regmap`` at offset 0).

    Parameters
    ----------
    block : wiring.Component
        A block with a ``regs`` member, ``In(hw_signature(regmap))``. It becomes the submodule ``block``.
    regmap : RegMap
        The block's register map, addresses from 0, with the same resets as the block's ``regs`` was built with
        (e.g. ``limiter_regmap().with_resets(limiter_resets(params))``).
    taps : mapping of str to tuple of str
        Extra ``Out`` ports, each a copy of the bank's ``hw`` member at the given path (as in
        :func:`~.regbank.hw_port`), e.g. ``{"o_snapshot": ("ctrl", "snapshot")}``: the value the block sees that
        cycle, for testbenches.

    Attributes
    ----------
    s_axil : In(AXI4LiteSignature(addr_width))
        The block's registers.
    (the block's other members) :
        As the block's, same names, directions and shapes.
    (each tap) : Out(shape of the tapped member)
    block, regmap, addr_width :
        The wrapped block, its register map and the width of ``s_axil``'s addresses.

    Raises ``ValueError`` if ``regmap``'s ``hw`` signature (ports, shapes, resets) is not the block's ``regs``, or a
    tap's name is taken.
    """

    def __init__(self, block: wiring.Component, regmap: RegMap, *, taps: Mapping[str, tuple[str, ...]] | None = None):
        members = block.signature.members
        hw = hw_signature(regmap)
        if REGS not in members or _ports(members[REGS].signature.flip()) != _ports(hw):
            raise ValueError(f"{type(block).__name__}.{REGS} is not the hw side of register map {regmap.name} "
                             f"(a different map, or other resets)")
        self.block = block
        self.regmap = regmap
        self.addr_width = standalone_addr_width(regmap)
        self._through = {name: member for name, member in members.items() if name != REGS}
        self._taps = dict(taps or {})
        tap_members = {}
        for name, path in self._taps.items():
            if name == "s_axil" or name in self._through:
                raise ValueError(f"tap {name!r} would shadow a port of {type(block).__name__}")
            tapped = hw.members[hw_name(path[0])]
            for part in path[1:]:
                tapped = tapped.signature.members[hw_name(part)]
            tap_members[name] = Out(tapped.shape)
        super().__init__({"s_axil": In(AXI4LiteSignature(self.addr_width)), **self._through, **tap_members})

    def elaborate(self, platform):
        m = Module()
        m.submodules.axil = axil = AXI4LiteTarget(self.addr_width)
        m.submodules.bank = bank = RegisterBank(self.regmap, self.addr_width)
        m.submodules.block = block = self.block
        wiring.connect(m, wiring.flipped(self.s_axil), axil.axil)
        wiring.connect(m, axil.bus, bank.bus)
        wiring.connect(m, bank.hw, getattr(block, REGS))
        for name, member in self._through.items():
            outer, inner = getattr(self, name), getattr(block, name)
            if member.is_signature:
                if member.flow == In:
                    wiring.connect(m, wiring.flipped(outer), inner)
                else:
                    wiring.connect(m, inner, wiring.flipped(outer))
            elif member.flow == In:
                m.d.comb += inner.eq(outer)
            else:
                m.d.comb += outer.eq(inner)
        for name, path in self._taps.items():
            m.d.comb += getattr(self, name).eq(hw_port(bank.hw, path))
        return m
