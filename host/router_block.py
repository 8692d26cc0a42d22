"""Register-level model of the router block: the ``router.*`` registers of the core answered as the RTL answers them.

:class:`~.model.CoreModel` (bus access) ─▶ :class:`RouterBlock` ─▶ :class:`~.router.RouterModel` (key, double-buffered
tables, pool descriptors and class entries, counters)

The register bank model holds the storage; this block reacts to the writes the RTL reacts to (the key words, the
``go`` pulses, ``table_wdata``) and drives the fields the RTL drives (parameters, status, ``table_rdata``,
counters). Registers and their behaviour: ``hdl/router.rdl``, ``docs/router.md``.

``status.busy`` always reads 0 here. In the RTL it stays high for ``SWAP_DRAIN_CYCLES`` advancing cycles after a
swap, which end before the next bus access can read it (every access takes 5 cycles, and the router's pipeline only
stalls while a verdict output is held not ready).
"""

from __future__ import annotations

from ..hdl.router_layouts import CLASSES, RouterParams
from .register_model import BlockModel, RegisterBankModel
from .router import RouterModel

__all__ = ["RouterBlock", "COUNTERS"]

#: Counters the block mirrors from the model, by register name under ``router.``.
COUNTERS = ("routed", "unavailable", "swaps")



class RouterBlock(BlockModel):
    """The router's registers as the RTL drives them, around a :class:`~.router.RouterModel`.

    Parameters
    ----------
    params : RouterParams
        The router's elaboration parameters.
    bank : RegisterBankModel
        The core's register bank; its map must hold the ``router.*`` registers.

    Attributes
    ----------
    model : RouterModel
        The key, both table buffers, pool descriptors, class entries and counters. Tests route requests through
        it directly (``model.route(req)``); the counters follow on the next register read.
    """

    PREFIX = "router."
    COUNTERS = COUNTERS

    def __init__(self, params: RouterParams, bank: RegisterBankModel):
        super().__init__(bank)
        self.params = params
        self.model = RouterModel(params)
        for name, value in {"params.table_entries": params.table_entries, "params.id_bits": params.id_bits,
                            "sizes.pools": params.pools, "sizes.classes": CLASSES, "status.busy": 0}.items():
            bank.set_hw(self.PREFIX + name, value)
        self._sync()

    # -- bus events (called by CoreModel) --

    def before_read(self, reg: str, cycle: int) -> None:
        """A read of register ``reg`` (full name) is about to be answered."""
        name = reg[len(self.PREFIX):]
        if name == "table_rdata":
            self.bank.set_hw("router.table_rdata.value", self.model.read_word(self._value("table_addr")))
        else:
            self._sync()

    def after_write(self, reg: str, cycle: int) -> None:
        """A write to register ``reg`` (full name) was accepted."""
        name = reg[len(self.PREFIX):]
        if name.startswith("key["):
            self.model.set_key_word(int(name[4:-1]), self._value(name))
        elif name == "table_wdata":
            # swmod: the RAM takes the word at table_addr, and the address counts up (17 bits, wrapping).
            self.model.write_word(self._value("table_addr"), self._value("table_wdata"))
            self.bank.incr("router.table_addr.value")
        elif name == "pool_commit":
            if self._fired("pool_commit.go"):
                self._pool_commit()
        elif name == "class_commit":
            if self._fired("class_commit.go"):
                self._class_commit()
        elif name == "swap":
            if self._fired("swap.go"):
                self.model.swap()
                self._sync()

    # -- behaviour --

    def _pool_commit(self) -> None:
        index = self._field("pool_commit", "index")
        if index >= self.params.pools:
            return                                          # no such pool: the RTL ignores the commit
        self.model.commit_pool(index, self._value("pool_base"), self._field("pool_size", "m"),
                               bool(self._field("pool_size", "enabled")))

    def _class_commit(self) -> None:
        self.model.commit_class(self._field("class_commit", "index"), self._field("class_stage", "pool"),
                                self._field("class_stage", "key_sel"), self._field("class_stage", "header_slot"))

    def _sync(self) -> None:
        """Drive the fields that follow the model: the active buffer and the counters."""
        self.bank.set_hw("router.status.active", int(self.model.active))
        self._mirror_counters(self.model)
