"""Suite-wide: the board build first, the shared testbench layer on the import path, and the bus-recording fixture.

The ``synth`` tests (when their tools are installed: ``pip install -e '.[synth]'``) run Yosys and nextpnr on one
core for many minutes, and the volume tests run for many minutes too. :func:`pytest_collection_modifyitems` puts
them at the heads of the two pytest-xdist workers' queues, so they start at once, one group on each core, and
:func:`pytest_runtest_logfinish` records the schedule in ``build/test-timeline.tsv``.

``tests/`` goes on ``sys.path`` here, so test modules import the shared layer as ``support`` (``tests/support/``;
pytest runs with ``--import-mode=importlib``, which adds no path of its own). ``run_cocotb`` hands this process's
``sys.path`` to the simulator, so testbenches running inside it import ``support`` the same way.
"""

import os
import sys
import time
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.transport import RecordingTransport  # noqa: E402  (needs the path above)
from wirespeed.host.transports.base import Transport  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Order the suite for two pytest-xdist workers under ``--dist worksteal``.

    worksteal hands the first half of the list to one worker and the second half to the other, and a worker that
    runs dry later steals the tail of the other's queue, never its running test. So the long tests go at the head
    of each half: the ``synth`` tests (Yosys and nextpnr, one core for many minutes) head the first half, the other
    ``slow`` tests (the volume tests) head the second, and everything else keeps its collected order behind them.
    A long test that started last would otherwise be the suite's tail on one core while the other sat idle. Under
    another scheduler, or one worker, this is only an order."""
    synth = [item for item in items if item.get_closest_marker("synth")]
    slow = [item for item in items if item.get_closest_marker("slow") and not item.get_closest_marker("synth")]
    heads = set(map(id, synth + slow))
    rest = [item for item in items if id(item) not in heads]
    split = max(0, min(len(rest), len(items) // 2 - len(synth)))
    items[:] = synth + rest[:split] + slow + rest[split:]


_TIMELINE = None
_CONFIG = None


def pytest_configure(config):
    global _CONFIG
    _CONFIG = config


def pytest_sessionstart(session):
    """A new run starts a new timeline (in the controller, before pytest-xdist starts its workers)."""
    if not hasattr(session.config, "workerinput"):
        from wirespeed.sim.toolchain import build_root
        (build_root() / "test-timeline.tsv").unlink(missing_ok=True)


def _runs_tests() -> bool:
    """A pytest-xdist worker, or pytest without workers. The xdist controller also sees every worker's
    logstart/logfinish, interleaved; it records nothing."""
    return _CONFIG is None or hasattr(_CONFIG, "workerinput") or not _CONFIG.pluginmanager.has_plugin("dsession")


def pytest_runtest_logstart(nodeid, location):
    """Record when each test starts on which worker (see :func:`pytest_runtest_logfinish`)."""
    global _TIMELINE
    if _runs_tests():
        _TIMELINE = (nodeid, time.time())


def pytest_runtest_logfinish(nodeid, location):
    """Append ``worker  start  end  seconds  test`` to ``<build>/test-timeline.tsv``: which test ran where and when,
    the schedule a suite-time measurement needs (``--durations`` gives only the ten slowest and no order)."""
    if not _TIMELINE or _TIMELINE[0] != nodeid:
        return
    from wirespeed.sim.toolchain import build_root
    start, end = _TIMELINE[1], time.time()
    path = build_root() / "test-timeline.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}\t{start:.1f}\t{end:.1f}\t{end - start:.1f}\t"
                f"{nodeid}\n")


@pytest.fixture
def record_bus():
    """Wrap a device's transport in a :class:`~support.transport.RecordingTransport`.

    ``record_bus(dev, **faults)`` replaces ``dev.transport`` (an ``Offload``) with a recorder around it and returns
    the recorder; ``record_bus(transport, **faults)`` returns a recorder around a bare transport. ``faults``:
    ``stuck``, ``clear_bits``, ``fail_after_writes``, ``yield_inside``, ``regmap`` (see the class).
    """
    def wrap(target, **faults) -> RecordingTransport:
        if isinstance(target, Transport):
            return RecordingTransport(target, **faults)
        target.transport = RecordingTransport(target.transport, **faults)
        return target.transport
    return wrap
