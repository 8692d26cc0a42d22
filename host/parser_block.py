"""Register-level model of the header parser's registers inside the core: the committed tables the RTL matches
against, and its counters.

:class:`~.model.CoreModel` (bus access) ─▶ :class:`ParserBlock` ─▶ :class:`~.parser.ParserConfig` for
:func:`~.parser.parse`

The bank holds the staging registers; a ``prefix_commit`` or ``extra_commit`` pulse copies them into the table, as
in ``hdl/parser.py``. :meth:`ParserBlock.config` gives what the RTL would parse with right now.
"""

from __future__ import annotations

from ..hdl.parser_layouts import EXTRA_SLOTS, NAME_BYTES, PREFIX_BYTES, PREFIX_ENTRIES, ErrorFlag
from .parser import Descriptor, ParserConfig
from .register_model import BlockModel, RegisterBankModel

__all__ = ["ParserBlock"]


def _unpack(words, size: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)[:size]


class ParserBlock(BlockModel):
    """The parser's committed prefix table and extra names, its key and limits, and its counters."""

    PREFIX = "parser."

    def __init__(self, bank: RegisterBankModel):
        super().__init__(bank)
        self.prefixes: list = [None] * PREFIX_ENTRIES
        self.extras: list = [None] * EXTRA_SLOTS
        self._config = None

    def before_read(self, reg: str, cycle: int) -> None:
        pass

    def after_write(self, reg: str, cycle: int) -> None:
        name = reg[len(self.PREFIX):]
        if name == "prefix_commit" and self._fired("prefix_commit.go"):
            index = self._field("prefix_commit", "index")
            length = min(self._field("prefix_ctrl", "len"), PREFIX_BYTES)
            data = _unpack([self._value(f"prefix_data[{i}]") for i in range(PREFIX_BYTES // 4)], length)
            valid = self._field("prefix_ctrl", "valid")
            self.prefixes[index] = (data, self._field("prefix_ctrl", "route_class")) if valid else None
        elif name == "extra_commit" and self._fired("extra_commit.go"):
            slot = self._field("extra_commit", "index")
            length = min(self._field("extra_ctrl", "len"), NAME_BYTES)
            data = _unpack([self._value(f"extra_data[{i}]") for i in range(NAME_BYTES // 4)], length)
            self.extras[slot] = data or None
        self._config = None

    def config(self) -> ParserConfig:
        """The configuration the RTL parses with (raises ConfigError for register contents the driver never
        writes, such as a limit of 0)."""
        if self._config is None:
            self._config = ParserConfig(
                max_header_bytes=self._field("limits", "max_header_bytes"),
                default_class=self._field("route_default", "default_class"),
                poly=self._value("fp_poly"), seed=self._value("fp_seed"),
                prefixes=tuple(self.prefixes), extras=tuple(self.extras))
        return self._config

    def count(self, desc: Descriptor) -> None:
        """The counters one descriptor advances."""
        self.bank.incr("parser.requests.count")
        if desc.complete:
            self.bank.incr("parser.complete.count")
        for i, flag in enumerate(ErrorFlag):
            if flag & desc.errors:
                self.bank.incr(f"parser.error_count[{i}].count")
