"""Run cocotb testbenches against Amaranth components on Verilator, from pytest.

test_<block>.py (pytest) ─▶ :func:`run_cocotb` ─▶ Amaranth → Verilog ─▶ cocotb_tools.runner (Verilator) ─▶ the
cocotb coroutines in the same test file.

Each distinct design (its Verilog text) gets its own cached build directory under ``build/cocotb/``, so parameter sets
never share objects and re-runs skip the C++ compile. ``WAVES=1`` in the environment writes an FST waveform beside the
build (``build/cocotb/<name>-<hash>/dump.fst``). Test parameters reach the testbench as ``WS_<NAME>`` environment
variables (see :func:`param`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Mapping

from amaranth.back import verilog

from .toolchain import build_dir, make_variables, use_verilator

__all__ = ["to_verilog", "run_cocotb", "param", "waves_enabled"]


def waves_enabled() -> bool:
    return os.environ.get("WAVES", "0") not in ("", "0")


def to_verilog(component, name: str) -> str:
    """Elaborate an Amaranth component to Verilog with top module ``name``."""
    return verilog.convert(component, name=name, emit_src=False)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


#: C++ optimisation of cocotb's and pyverilator's Verilator builds, as make variables. Verilator's default is -Os;
#: -O1 compiles the core's model in about 3/4 of the time (48 s against 65 s for its three largest files on one
#: core), and these tests' time goes to their Python testbenches, not the model. (The harness, whose volume tests
#: are bound by the model, keeps -O2: sim/harness.py.)
COCOTB_OPT = "OPT_FAST=-O1 OPT_GLOBAL=-O1"


@contextlib.contextmanager
def make_variables_set(assignments: str):
    """``MAKEFLAGS`` with ``assignments`` added while the block runs, for the makes it starts (cocotb's runner and
    pyverilator run make with this process's environment); restored afterwards."""
    flags = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = make_variables(flags or "", assignments)
    try:
        yield
    finally:
        if flags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = flags


def run_cocotb(component, *, toplevel: str, test_file: str, parameters: Mapping[str, object] | None = None,
               testcase: str | None = None, seed: int | None = None, extra_sources=(), design_key=None) -> Path:
    """Build ``component`` and run the cocotb tests of ``test_file`` (a path; usually ``__file__``) against it.

    Parameters
    ----------
    component :
        The design, or a function of no arguments that makes it (so that a cached design is not even constructed:
        Amaranth warns about an elaboratable it never elaborated).
    design_key :
        With it, the Verilog comes from :func:`wirespeed.sim.elaborate.cached_verilog` (``toplevel`` and this key,
        e.g. the component's parameters), so another run of the same design does no Amaranth elaboration: about 18 s
        for the whole core, once per testcase before. Only for a component built from ``hdl/`` alone, whose Verilog
        the key, the top name and the ``hdl/`` sources decide; a test-file harness leaves it None (elaborated
        every run).
    parameters :
        JSON-serialisable values handed to the testbench (read them back with :func:`param`).
    seed :
        cocotb's random seed; the testbench seeds its own generators from it, so a failure is reproducible.

    Raises ``AssertionError`` naming the results file when any cocotb test fails.
    """
    use_verilator()
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    waves = waves_enabled()
    make = component if callable(component) and not hasattr(component, "elaborate") else (lambda: component)
    if design_key is None:
        text = to_verilog(make(), toplevel)
    else:
        from .elaborate import cached_verilog
        text = cached_verilog(toplevel, make, design_key)
    bdir = build_dir("cocotb", toplevel, text + f"\nwaves={waves}\n{COCOTB_OPT}" + "".join(map(str, extra_sources)))
    source = bdir / f"{toplevel}.v"
    _write_if_changed(source, text)

    test_path = Path(test_file).resolve()
    # cocotb 2.1's runner rebuilds the simulator's PYTHONPATH from this process's sys.path (overriding extra_env's
    # PYTHONPATH), so the test module's folder must be on sys.path for the simulator to import it.
    if str(test_path.parent) not in sys.path:
        sys.path.append(str(test_path.parent))
    env = {"PYTHONPATH": os.pathsep.join(sys.path)}
    for key, value in (parameters or {}).items():
        env[f"WS_{key.upper()}"] = json.dumps(value)

    runner = get_runner("verilator")
    # pytest-xdist workers may build the same design at once: one builds, the others wait and reuse it.
    with open(bdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with make_variables_set(COCOTB_OPT):   # cocotb's make reads this process's environment
            runner.build(sources=[source, *extra_sources], hdl_toplevel=toplevel, build_dir=bdir, always=False,
                         waves=waves, build_args=(["--trace-fst", "--trace-structs"] if waves else []) + ["-Wno-fatal"],
                         timescale=("1ns", "1ps"), log_file=bdir / "build.log")
    # Each run (test file, parameters, testcase) gets its own results file, so parallel runs never collide.
    run_id = hashlib.sha256(json.dumps([test_path.stem, env, testcase, seed], sort_keys=True).encode()).hexdigest()
    results_xml = bdir / f"results-{test_path.stem}-{run_id[:10]}.xml"
    try:
        results = runner.test(hdl_toplevel=toplevel, test_module=test_path.stem, build_dir=bdir, test_dir=bdir,
                              extra_env=env, testcase=testcase, seed=seed, waves=waves, results_xml=str(results_xml))
    except SystemExit as exc:  # cocotb's runner exits the process on failures when it detects pytest
        raise AssertionError(f"cocotb tests of {test_path.name} failed (exit {exc.code}); "
                             f"see {results_xml} and the log above") from None
    num_tests, num_failed = get_results(results)
    assert num_tests > 0, f"no cocotb test ran from {test_path.name}"
    assert num_failed == 0, f"{num_failed} of {num_tests} cocotb tests failed; see {results}"
    return results


def param(name: str, default=None):
    """Inside a testbench: the value :func:`run_cocotb` passed as ``parameters[name]``."""
    raw = os.environ.get(f"WS_{name.upper()}")
    return default if raw is None else json.loads(raw)
