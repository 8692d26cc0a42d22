"""Suite-wide collection order: the board build first.

The ``synth`` tests (when their tools are installed: ``pip install -e '.[synth]'``) run Yosys and nextpnr on one
core for many minutes. Collected first, pytest-xdist hands them to a worker at the start, and the rest of the suite
runs beside them on the other worker instead of after them.
"""


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("synth") is None)   # stable: synth first, else unchanged
