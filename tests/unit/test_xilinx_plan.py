"""The Xilinx plan (wirespeed.host.tools.xilinx) and the OpenNIC plugin (wirespeed.hdl.platform.opennic), checked
without Vivado.

The PYNQ-Z2 plan is generated once (a small core, for speed) and checked for consistency: files, TCL references,
wrapper ports against the core's Verilog, VLNV against the driver, XDC period against the clock. The OpenNIC plugin
is elaborated to Verilog and its ports checked against the shell's ``box_250mhz``; its width converters and AXI4-Lite
clock crossing are simulated.
"""

import random
import re
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from wirespeed.hdl.id.id_block import CoreParams
from wirespeed.hdl.limiter.layouts import LimiterParams
from wirespeed.hdl.platform.opennic import (BUS_BYTES, PLUGIN_MODULE, OpenNicBox250, _DownConverter, _UpConverter,
                                            opennic_params, opennic_verilog)
from wirespeed.hdl.router.layouts import RouterParams
from wirespeed.host.tools import xilinx
from wirespeed.hdl.bus.regmap import core_regmap

REPO = Path(__file__).resolve().parents[2]
CLOCK_MHZ = 125.0


def small_params(width=8, clock_hz=125_000_000):
    return CoreParams(width_bytes=width, clock_hz=clock_hz,
                      limiter=LimiterParams(capacity=64, plans=1, clock_hz=clock_hz),
                      router=RouterParams(table_entries=64, pools=1))


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("pynq-z2")
    files = xilinx.write_pynq_plan(out, small_params(), clock_mhz=CLOCK_MHZ)
    return out, files


def read(plan, name):
    return (plan[0] / name).read_text()


def test_files_exist(plan):
    out, files = plan
    names = {p.name for p in files}
    assert names >= {"wirespeed_core.v", "wirespeed_ip.v", "package_ip.tcl", "block_design.tcl", "build.tcl",
                     "pynq-z2.xdc", "README.md", "wirespeed_core.xml"}
    assert all(p.is_file() and p.stat().st_size for p in files)


def test_tcl_references_files_that_exist(plan):
    out, _ = plan
    for tcl in ("package_ip.tcl", "block_design.tcl", "build.tcl"):
        for ref in re.findall(r"\$here/([\w.\-]+\.(?:v|tcl|xdc))", read(plan, tcl)):
            assert (out / ref).is_file(), f"{tcl} references {ref}, which the plan does not write"
    build = read(plan, "build.tcl")
    for needed in ("package_ip.tcl", "block_design.tcl", "pynq-z2.xdc"):
        assert f"$here/{needed}" in build
    pkg = read(plan, "package_ip.tcl")
    assert "$here/wirespeed_core.v" in pkg and "$here/wirespeed_ip.v" in pkg
    assert "ipx::package_project" in pkg and "ipx::infer_bus_interfaces" in pkg
    bd = read(plan, "block_design.tcl")
    for needed in ("processing_system7", "axi_dma", "validate_bd_design", "assign_bd_address",
                   f"PCW_FPGA0_PERIPHERAL_FREQMHZ {{{CLOCK_MHZ:g}}}"):
        assert needed in bd
    assert "write_bitstream" in build and ".hwh" in build


def test_vlnv_matches_the_driver_and_the_rdl(plan):
    from wirespeed.host.transports import pynq as transport_pynq
    from wirespeed.host.driver.pynq_driver import VLNV
    version = core_regmap()["id.version"]
    ident = f"wirespeed.dev:offload:wirespeed_core:{version.field('major').reset}.{version.field('minor').reset}"
    assert xilinx.vlnv() == ident == VLNV
    assert ident.startswith(transport_pynq.VLNV.rpartition(":")[0] + ":")
    vendor, library, name, ver = ident.split(":")
    pkg = read(plan, "package_ip.tcl")
    assert f"-vendor {vendor} -library {library}" in pkg
    assert f"set_property name {name} $core" in pkg and f"set_property version {ver} $core" in pkg
    assert f"-vlnv {ident} " in read(plan, "block_design.tcl")
    # The IP-XACT register export beside it carries the same identity.
    xml = read(plan, "wirespeed_core.xml")
    assert f">{vendor}<" in xml and f">{name}<" in xml


def test_wrapper_ports_match_the_core(plan):
    core = xilinx.verilog_ports(read(plan, "wirespeed_core.v"), xilinx.CORE_TOP)
    wrapper_text = read(plan, "wirespeed_ip.v")
    wrapper = _ansi_ports(wrapper_text, xilinx.IP_TOP)
    assert wrapper["aclk"] == ("input", 1) and wrapper["aresetn"] == ("input", 1)
    assert core["clk"] == ("input", 1) and core["rst"] == ("input", 1)
    prefixes = {"s_axil": "s_axi_ctrl", "s_axis": "s_axis", "m_axis": "m_axis", "m_verdict": "m_axis_verdict"}
    for name, (direction, width) in core.items():
        if name in ("clk", "rst"):
            continue
        bus, _, signal = name.partition("__")
        wname = f"{prefixes[bus]}_{signal}"
        assert wname in wrapper, f"core port {name} has no wrapper port {wname}"
        wdir, wwidth = wrapper[wname]
        assert wdir == direction
        if name == "m_verdict__tdata":
            assert wwidth == xilinx.VERDICT_TDATA_BITS >= width
        else:
            assert wwidth == width, name
    # The instance connects every core port exactly once.
    inst = wrapper_text[wrapper_text.index(f"{xilinx.CORE_TOP} core ("):]
    connected = re.findall(r"\.(\w+)\(", inst)
    assert sorted(connected) == sorted(core)
    # Every wrapper port carries its Xilinx interface attribute.
    for name in wrapper:
        assert re.search(rf'X_INTERFACE_INFO = "[^"]*" \*\)\n(?:  \(\*[^\n]*\n)*  (?:input|output) wire (?:\[\d+:0\] )?'
                         rf'{name}\b', wrapper_text), name
    assert 'ASSOCIATED_BUSIF s_axi_ctrl:s_axis:m_axis:m_axis_verdict' in wrapper_text
    assert f"FREQ_HZ {int(CLOCK_MHZ * 1e6)}" in wrapper_text
    assert f"ADDR_WIDTH {core['s_axil__awaddr'][1]}" in wrapper_text


def _ansi_ports(text, module):
    head = re.search(rf"module {module} \((.*?)\n\);", text, re.S).group(1)
    return {m.group(3): (m.group(1), int(m.group(2) or 0) + 1)
            for m in re.finditer(r"(input|output) wire (?:\[(\d+):0\] )?(\w+)", head)}


def test_wrapper_elaborates_with_yosys(plan):
    # A Yosys with a Verilog frontend (Amaranth's built-in one has none): native, or YoWASP's from the synth extra.
    import subprocess
    out, _ = plan
    try:
        yosys = xilinx.find_yosys()
    except xilinx.YosysNotFound as exc:
        pytest.skip(str(exc))
    # The core as a stub with its real port declarations: parsing the whole core would take a minute.
    ports = xilinx.verilog_ports(read(plan, "wirespeed_core.v"), xilinx.CORE_TOP)
    stub = out / "core_stub.v"
    stub.write_text(f"module {xilinx.CORE_TOP}({', '.join(ports)});\n"
                    + "".join(f"  {d} [{w - 1}:0] {n};\n" for n, (d, w) in ports.items()) + "endmodule\n")
    # Relative names: YoWASP's sandbox sees only its working folder.
    (out / "check.ys").write_text(f"read_verilog {stub.name}\nread_verilog wirespeed_ip.v\n"
                                  f"hierarchy -check -top {xilinx.IP_TOP}\nproc\ncheck -assert\n")
    run = subprocess.run([yosys, "-q", "-s", "check.ys"], cwd=out, capture_output=True, text=True)
    # Fails on a syntax error, a missing module or an unknown port.
    assert run.returncode == 0, run.stdout + run.stderr


def test_xdc_period_matches_the_clock(plan):
    period = float(re.search(r"create_clock -period ([\d.]+)", read(plan, "pynq-z2.xdc")).group(1))
    assert period == pytest.approx(1000 / CLOCK_MHZ, abs=1e-3)
    assert f"{1000 / CLOCK_MHZ:.3f} ns" in read(plan, "README.md")


def test_committed_xdc_is_the_default_plan():
    committed = (REPO / "constraints" / "pynq-z2.xdc").read_text()
    assert committed == xilinx.pynq_xdc(xilinx.DEFAULT_CLOCK_MHZ)


def test_core_reports_the_plan_clock(plan):
    # The ID block's params_clock reset is driven from CoreParams.clock_hz: the plan sets it to FCLK_CLK0.
    assert xilinx.params_at_clock(small_params(), 125_000_000).limiter.clock_hz == 125_000_000
    assert str(int(CLOCK_MHZ * 1e6)) in read(plan, "wirespeed_ip.v")


def test_every_register_is_packaged(plan):
    regmap = core_regmap()
    pkg = read(plan, "package_ip.tcl")
    regs = re.findall(r"^set r \[ws_reg \$ab (\w+) 0x([0-9A-F]+) (\d+) ([\w-]+) ", pkg, re.M)
    assert len(regs) == len(regmap.registers)
    window = int(re.search(r"set_property range (\d+) \$ab", pkg).group(1))
    for (name, offset, size, access), reg in zip(regs, regmap.registers):
        assert int(offset, 16) == reg.address and int(size) == reg.width
        assert int(offset, 16) + int(size) // 8 <= window
        assert name.isidentifier()
    assert window == 1 << xilinx.verilog_ports(read(plan, "wirespeed_core.v"), "wirespeed_core")["s_axil__awaddr"][1]
    # Braces in descriptions would break the TCL words.
    for line in pkg.splitlines():
        if line.startswith(("set r [ws_reg", "ws_field")):
            assert line.count("{") == line.count("}")


def test_bad_clock():
    with pytest.raises(ValueError, match="clock_mhz"):
        xilinx.write_pynq_plan("/nonexistent", clock_mhz=500)


def test_parse_yosys_stat():
    text = """
=== wirespeed_core ===

   Number of wires:              10
   Number of cells:             100
     CARRY4                        3
     FDRE                         40
     FDSE                          2
     LUT2                         20
     LUT6                         30
     RAM32M                        2
     RAMB18E1                      3
     RAMB36E1                      1
     DSP48E1                       2
"""
    cells = xilinx.parse_yosys_stat(text)
    assert cells["FDRE"] == 40 and cells["RAMB36E1"] == 1
    s = xilinx._summarise(cells, xilinx.XC7Z020)
    assert s["used"] == {"LUT": 58, "FF": 42, "BRAM36": 2.5, "DSP": 2}
    assert s["fits"] and s["detail"]["carry4"] == 3


def test_parse_yosys_stat_of_yosys_0_70():
    # Yosys 0.70 (YoWASP) puts the count first, after a cell total; wire counts must not be read as cells.
    text = """
16. Printing statistics.

=== wirespeed_core ===

        +----------Local Count, excluding submodules.
        | 
       10 wires
      100 wire bits
       36 ports
      100 cells
        3   CARRY4
       40   FDRE
        2   FDSE
       20   LUT2
       30   LUT6
        2   RAM32M
        3   RAMB18E1
        1   RAMB36E1
        2   DSP48E1
"""
    cells = xilinx.parse_yosys_stat(text)
    assert "wires" not in cells and "ports" not in cells
    assert xilinx._summarise(cells, xilinx.XC7Z020)["used"] == {"LUT": 58, "FF": 42, "BRAM36": 2.5, "DSP": 2}


# --- OpenNIC ----------------------------------------------------------------------------------------------------

#: box_250mhz's ports with NUM_PHYS_FUNC = NUM_CMAC_PORT = 1 (Xilinx/open-nic-shell, src/box_250mhz/box_250mhz.sv,
#: plugin/p2p/p2p_250mhz.sv), except the 16-bit mod_rstn/mod_rst_done, which a plugin gets one bit of.
def shell_ports():
    ports = {"s_axil_awvalid": ("input", 1), "s_axil_awaddr": ("input", 32), "s_axil_awready": ("output", 1),
             "s_axil_wvalid": ("input", 1), "s_axil_wdata": ("input", 32), "s_axil_wready": ("output", 1),
             "s_axil_bvalid": ("output", 1), "s_axil_bresp": ("output", 2), "s_axil_bready": ("input", 1),
             "s_axil_arvalid": ("input", 1), "s_axil_araddr": ("input", 32), "s_axil_arready": ("output", 1),
             "s_axil_rvalid": ("output", 1), "s_axil_rdata": ("output", 32), "s_axil_rresp": ("output", 2),
             "s_axil_rready": ("input", 1),
             "mod_rstn": ("input", 1), "mod_rst_done": ("output", 1), "axil_aclk": ("input", 1),
             "axis_aclk": ("input", 1)}
    for prefix, d in (("s_axis_qdma_h2c", "input"), ("m_axis_qdma_c2h", "output"),
                      ("m_axis_adap_tx_250mhz", "output"), ("s_axis_adap_rx_250mhz", "input")):
        r = "output" if d == "input" else "input"
        ports.update({f"{prefix}_tvalid": (d, 1), f"{prefix}_tdata": (d, 512), f"{prefix}_tkeep": (d, 64),
                      f"{prefix}_tlast": (d, 1), f"{prefix}_tuser_size": (d, 16), f"{prefix}_tuser_src": (d, 16),
                      f"{prefix}_tuser_dst": (d, 16), f"{prefix}_tready": (r, 1)})
    return ports


@pytest.fixture(scope="module")
def opennic_v():
    return opennic_verilog(opennic_params(limiter=LimiterParams(capacity=64, plans=1, clock_hz=250_000_000),
                                          router=RouterParams(table_entries=64, pools=1)))


def test_opennic_ports_are_the_shells(opennic_v):
    assert xilinx.verilog_ports(opennic_v, PLUGIN_MODULE) == shell_ports()


def test_opennic_core_is_inside(opennic_v):
    # The core's register bank and its AXI4-Lite target are in the plugin (not optimised away or left open).
    modules = re.findall(r"^module \\?(\S+) ?\(", opennic_v, re.M)
    assert f"{PLUGIN_MODULE}.core" in modules and f"{PLUGIN_MODULE}.core.axil" in modules
    # One clock-crossing FIFO per AXI4-Lite channel between the shell's s_axil_* and the core's target.
    assert {f"{PLUGIN_MODULE}.axil_{ch}" for ch in ("aw", "w", "b", "ar", "r")} <= set(modules)


def test_opennic_defaults():
    p = opennic_params()
    assert p.width_bytes == 16 and p.clock_hz == 250_000_000 and "submit" in p.features
    with pytest.raises(ValueError, match="whole pipeline"):
        OpenNicBox250(CoreParams(features=frozenset()))
    with_port = OpenNicBox250(verdict_port=True)
    assert "m_axis_verdict_tdata" in with_port.signature.members


def _converter_bench(narrow, seed):
    """512-bit packets → narrow beats → 512-bit beats, with random valid gaps and backpressure."""
    from amaranth import Module
    rng = random.Random(seed)
    m = Module()
    m.submodules.down = down = _DownConverter(BUS_BYTES, narrow)
    m.submodules.up = up = _UpConverter(narrow, BUS_BYTES)
    m.d.comb += [up.i_data.eq(down.o_data), up.i_keep.eq(down.o_keep), up.i_last.eq(down.o_last),
                 up.i_valid.eq(down.o_valid), down.o_ready.eq(up.i_ready)]
    packets = [bytes(rng.randrange(256) for _ in range(rng.choice([1, 15, 16, 63, 64, 65, 200, rng.randrange(1, 300)])))
               for _ in range(12)]
    received, beats = [], []

    async def source(ctx):
        for pkt in packets:
            chunks = [pkt[i:i + BUS_BYTES] for i in range(0, len(pkt), BUS_BYTES)]
            for i, chunk in enumerate(chunks):
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(down.i_data, int.from_bytes(chunk, "little"))
                ctx.set(down.i_keep, (1 << len(chunk)) - 1)
                ctx.set(down.i_last, i == len(chunks) - 1)
                ctx.set(down.i_valid, 1)
                await ctx.tick().until(down.i_ready)
                ctx.set(down.i_valid, 0)

    async def sink(ctx):
        current = b""
        narrow_beats = 0
        while len(received) < len(packets):
            ctx.set(up.o_ready, rng.random() < 0.7)
            _, _, valid, ready, data, keep, last, dv = await ctx.tick().sample(
                up.o_valid, up.o_ready, up.o_data, up.o_keep, up.o_last, down.o_valid)
            if valid and ready:
                n = bin(keep).count("1")
                assert keep == (1 << n) - 1, "keep must be contiguous"
                assert last or n == BUS_BYTES
                current += data.to_bytes(BUS_BYTES, "little")[:n]
                if last:
                    received.append(current)
                    current = b""

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_process(source)
    sim.add_testbench(sink)
    sim.run_until(1e-3)
    return packets, received


@pytest.mark.parametrize("narrow", [16, 8])
def test_width_converters_round_trip(narrow):
    seed = 1234 + narrow
    packets, received = _converter_bench(narrow, seed)
    assert received == packets, f"seed {seed}"


def test_the_xc7z020_estimate_script_maps_luts_with_classic_abc_by_label():
    from wirespeed.host.tools.xilinx import CORE_TOP, _synth_script
    lines = _synth_script("core.v", "stat.txt", abc9=False, share=False).splitlines()
    assert lines[0] == "read_verilog core.v" and lines[-1] == "tee -o stat.txt stat"
    assert f"synth_xilinx -family xc7 -flatten -top {CORE_TOP} -run map_memory:map_luts" in lines
    abc = [ln for ln in lines if ln.startswith("abc ")]
    assert abc == ["abc -luts 2:2,3,6:5,10,20 -script +strash;&get,-n;&fraig,-x;&put;scorr;dc2;dretime;strash;if;mfs2"]
    assert not any("abc9" in ln for ln in lines)      # ...and without ABC's structural choices (dch)
    assert lines[-3] == f"synth_xilinx -family xc7 -flatten -top {CORE_TOP} -run finalize:"
    # Amaranth's scope cells (names only) are dropped before counting, so that any "$" cell left is unmapped logic.
    assert lines[-2] == "delete t:$scopeinfo"
    # share=True keeps synth_xilinx's own coarse step (with its SAT-based sharing) instead of the written-out one.
    shared = _synth_script("core.v", "stat.txt", abc9=False, share=True).splitlines()
    assert shared[1].endswith("-run begin:map_luts") and "alumacc" not in shared
    with_abc9 = _synth_script("core.v", "stat.txt", abc9=True, share=False).splitlines()
    assert not any(ln.startswith("abc ") for ln in with_abc9) and with_abc9[-3].endswith("-run map_luts:")
