"""Driver side of lookaside classification: requests through the MMIO submit window, verdicts from the result FIFO.

``Offload.classify*`` ─▶ :class:`SubmitCore` (sans-IO: register operations) ─▶ any transport ─▶ ``pipeline.rdl``

Per request: the bytes as 32-bit words into ``submit_data``, then ``doorbell`` with the length (and ``inline`` for
an Ethernet frame). A batch is submitted whole, then the driver polls ``status.results`` and reads each record from
``result[]``, popping it. Only the bytes the parser can read are sent (``docs/pipeline.md``, "Lookaside").
"""

from __future__ import annotations

from ..errors import ConfigError, TransportError
from .registers import Registers, Write
from ..models.pipeline import RECORD_WORDS, VerdictRecord

__all__ = ["SubmitCore", "bytes_to_send", "MAX_POLLS"]

#: Status reads before a missing verdict raises (the pipeline answers in tens of cycles; this is a hang guard).
MAX_POLLS = 10_000
_HEADER_END = b"\r\n\r\n"


def bytes_to_send(request: bytes, max_header_bytes: int) -> bytes:
    """The prefix of ``request`` that decides its verdict: up to the end of the header block, and never past the byte
    at index ``max_header_bytes`` (where the parser stops with ``header_too_large``). The parser reads nothing
    beyond either, so the verdict is the same as for the whole request."""
    end = request.find(_HEADER_END)
    limit = len(request) if end < 0 else end + len(_HEADER_END)
    return request[:min(limit, max_header_bytes + 1)]


class SubmitCore:
    """Lookaside classification, free of I/O.

    Parameters
    ----------
    regs : Registers
        Register access for the core map.
    width_bytes, window_bytes, result_depth : int
        The core's W, submit window and result FIFO sizes (:meth:`attach` reads them).
    """

    def __init__(self, regs: Registers, width_bytes: int, window_bytes: int, result_depth: int):
        self.regs = regs
        self.width = width_bytes
        self.window_bytes = window_bytes
        self.result_depth = result_depth
        doorbell = regs.regmap["pipeline.doorbell"]
        self._len_lsb = doorbell.field("len").lsb
        self._inline_lsb = doorbell.field("inline").lsb
        # The data register is written once per 4 bytes: skip the by-name lookup and range check there.
        self._data_address = regs.regmap["pipeline.submit_data"].address
        status = regs.regmap["pipeline.status"]
        self._results = status.field("results")
        self._free = status.field("free_beats")

    @classmethod
    def attach(cls, regs: Registers):
        """Read the core's sizes; an operation generator returning a :class:`SubmitCore`."""
        width = yield from regs.read("id.params_stream.width_bytes")
        window = yield from regs.read("pipeline.submit_capacity.bytes")
        depth = yield from regs.read("pipeline.result_capacity.entries")
        return cls(regs, width, window, depth)

    def _status(self):
        value = yield from self.regs.read("pipeline.status")
        return (value & self._results.mask) >> self._results.lsb, (value & self._free.mask) >> self._free.lsb

    def prepare(self, items) -> list[tuple[bytes, bool]]:
        """Check each ``(bytes, inline)`` item and cut requests to what the parser reads; raises
        :class:`ConfigError` naming the item before anything is written."""
        prepared = []
        append = prepared.append
        cut = None                                      # max_header_bytes + 1, read at the first request
        limit = min(self.window_bytes - self.width, 0xFFFF)
        for index, (data, inline) in enumerate(items):
            if type(data) is not bytes:
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    raise ConfigError(f"requests[{index}]", type(data).__name__, "must be bytes")
                data = bytes(data)
            if not inline:
                if cut is None:
                    cut = (yield from self.regs.read("parser.limits.max_header_bytes")) + 1
                # bytes_to_send: the first header end within the first `cut` bytes, else `cut` bytes at most.
                end = data.find(_HEADER_END, 0, cut)
                data = data[:end + 4] if end >= 0 else data[:cut]
            if len(data) > limit:
                what = "frame" if inline else "request header block"
                raise ConfigError(f"requests[{index}]", f"{len(data)} bytes ({what})",
                                  f"at most {limit} bytes fit the submit window")
            append((data, bool(inline)))
        return prepared

    def prepare_requests(self, requests: list, whole: bool = False):
        """:meth:`prepare` of lookaside requests only: the bytes to send of each, as a list. The same checks, cuts
        and register read, without a tuple per request (a batch's tuples are most of what makes the garbage
        collector run during it).

        ``whole``: the caller's transport reads no byte past :func:`bytes_to_send`'s on its own (the ``"software"``
        transport); then, when no request can be too large for the window (``max_header_bytes`` + 1 bytes fit it),
        the requests are returned whole, uncut (a bytes ``list`` as it is)."""
        if not requests:
            return []
        if set(map(type, requests)) != {bytes}:
            prepared = yield from self.prepare([(r, False) for r in requests])
            return [data for data, _ in prepared]
        cut = (yield from self.regs.read("parser.limits.max_header_bytes")) + 1
        if whole and cut <= min(self.window_bytes - self.width, 0xFFFF):
            return requests
        find = bytes.find
        prepared = [data[:end + 4] if (end := find(data, _HEADER_END, 0, cut)) >= 0 else data[:cut]
                    for data in requests]
        limit = min(self.window_bytes - self.width, 0xFFFF)
        if max(map(len, prepared)) > limit:
            index = next(i for i, data in enumerate(prepared) if len(data) > limit)
            raise ConfigError(f"requests[{index}]", f"{len(prepared[index])} bytes (request header block)",
                              f"at most {limit} bytes fit the submit window")
        return prepared

    def classify(self, items):
        """Operation generator: classify ``(bytes, inline)`` items in order; returns their :class:`VerdictRecord`s."""
        prepared = yield from self.prepare(items)
        records = []
        i = 0
        while i < len(prepared):
            pending, free = yield from self._status()
            if pending:
                raise TransportError(f"{pending} verdict(s) already wait in the result FIFO: another driver is "
                                     f"using this core's submit window")
            batch = []
            beats = 0
            while i < len(prepared) and len(batch) < self.result_depth:
                need = len(prepared[i][0]) // self.width + 1
                if beats + need > free:
                    break
                batch.append(prepared[i])
                beats += need
                i += 1
            if not batch:
                raise TransportError(f"the submit window has {free} free beats, too few for one request")
            for data, inline in batch:
                padded = data + b"\0" * (-len(data) % 4)
                for k in range(0, len(padded), 4):
                    yield Write(self._data_address, int.from_bytes(padded[k:k + 4], "little"))
                yield from self.regs.write("pipeline.doorbell",
                                           (len(data) << self._len_lsb) | (int(inline) << self._inline_lsb))
            for _ in range(MAX_POLLS):
                ready, _ = yield from self._status()
                if ready >= len(batch):
                    break
            else:
                raise TransportError(f"no verdict after {MAX_POLLS} status reads ({ready} of {len(batch)} ready): "
                                     f"the pipeline is stalled (is m_verdict or m_axis held not ready?)")
            for _ in batch:
                words = []
                for k in range(RECORD_WORDS):
                    words.append((yield from self.regs.read(f"pipeline.result[{k}]")))
                records.append(VerdictRecord.from_words(words))
                yield from self.regs.write("pipeline.result_pop.go", 1)
        return records
