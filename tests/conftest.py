"""Suite-wide: the board build first, the shared testbench layer on the import path, and the bus-recording fixture.

The ``synth`` tests (when their tools are installed: ``pip install -e '.[synth]'``) run Yosys and nextpnr on one
core for many minutes. Collected first, pytest-xdist hands them to a worker at the start, and the rest of the suite
runs beside them on the other worker instead of after them.

``tests/`` goes on ``sys.path`` here, so test modules import the shared layer as ``support`` (``tests/support/``;
pytest runs with ``--import-mode=importlib``, which adds no path of its own). ``run_cocotb`` hands this process's
``sys.path`` to the simulator, so testbenches running inside it import ``support`` the same way.
"""

import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.transport import RecordingTransport  # noqa: E402  (needs the path above)
from wirespeed.host.transports.base import Transport  # noqa: E402


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("synth") is None)   # stable: synth first, else unchanged


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
