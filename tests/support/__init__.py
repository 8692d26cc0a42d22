"""The testbench layer every RTL (cocotb) test and every driver test shares.

Modules
-------
testbench
    :class:`~support.testbench.TB`, the base of each test file's ``TB``: clock on ``clk``, reset on ``rst``
    (``TB.cycle`` is 0 in the first cycle out of reset), AXI4-Lite through the production driver
    (``AxiLiteMaster`` ─▶ ``CocotbTransport`` ─▶ ``Registers`` + ``arun``: ``tb.read(name)``, ``tb.write(name,
    value)``, ``tb.run_ops(ops)``), and one per-cycle loop that serves every stream endpoint, ``tb.on_cycle(hook)``
    monitors, and ``tb.wait_until(predicate, timeout_cycles=, stall_cycles=)`` (a stalled DUT fails, never hangs).
streams
    :class:`~support.streams.StreamSource` / :class:`~support.streams.StreamSink` for Amaranth streams
    (``valid``/``ready``/``payload``) and AXI4-Stream (``axis=True``: ``tdata``/``tkeep``/``tlast``/``tuser``), with
    seeded pause generators (:func:`~support.streams.random_pauses`, :func:`~support.streams.phased_pauses`; random
    idle on a source, random backpressure on a sink), packets (``send_packet`` / ``recv_packet``), and every beat's
    handshake cycle and first-offered cycle (:class:`~support.streams.Beat`).
layouts
    :class:`~support.layouts.LayoutCodec`: payloads packed and unpacked through the Amaranth layouts and the
    ``LayoutRecord`` mirrors in ``host/`` (``Descriptor``, ``LimitVerdict``, ``RouteRequest``, ``FrontEndInfo``,
    ``VerdictRecord`` …), never by hand-written shifts.
transport
    :class:`~support.transport.RecordingTransport`: records every register access (by name) and injects faults
    (stuck reads, cleared bits, busy-for-N-polls after a write, failing writes, thread overlap); driver tests get it
    from the ``record_bus`` fixture in ``tests/conftest.py``.

How it is found: ``tests/conftest.py`` puts ``tests/`` on ``sys.path`` (pytest runs with ``--import-mode=importlib``),
and :func:`~wirespeed.sim.runner.run_cocotb` hands that path to the simulator, so ``from support import testbench``
works in a test module and inside the simulator alike. Nothing here imports cocotb at package level; ``testbench``
and ``streams`` need it, ``layouts`` and ``transport`` do not.

A testbench, in short::

    class TB(testbench.TB):
        def __init__(self, dut):
            super().__init__(dut, regmap=parser_regmap(), seed_env="PARSER_SEED")
            self.source = StreamSource(self, "i_stream", ByteBeat(W))
            self.desc = StreamSink(self, "o_desc", record=Descriptor)

    tb.source.set_pause_generator(random_pauses(tb.rng, 0.2))
    tb.source.send_packet(request)
    beat = await tb.desc.recv(timeout_cycles=1000)      # beat.value: a Descriptor; beat.cycle: when it was taken
"""
