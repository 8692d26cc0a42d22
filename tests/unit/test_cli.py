"""The `wirespeed` command line (wirespeed.host.tools.cli.main) on the model: JSON output, exit codes, error format."""

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import wirespeed
from wirespeed.hdl.id.id_block import CoreParams, build_hash
from wirespeed.host.tools.cli import main
from wirespeed.hdl.bus.regmap import core_regmap

MAGIC = core_regmap()["id.magic"].field("value").reset


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("WIRESPEED_DEBUG", raising=False)


def run_json(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def test_info_json(capsys):
    result = run_json(capsys, ["info", "--uri", "model", "--json"])
    assert result["uri"] == "model"
    assert result["magic"] == f"0x{MAGIC:08x}" == "0x57535044"
    assert result["build_hash"] == f"0x{build_hash(CoreParams()):08x}"
    assert result["width_bytes"] == CoreParams().width_bytes
    assert result["features"] == sorted(CoreParams().features) == ["frontend", "limiter", "parser", "router", "submit"]
    assert result["tenants"] == CoreParams().limiter.capacity == 4096
    assert result["maglev_size"] == CoreParams().router.table_entries == 8192


def test_info_text(capsys):
    assert main(["info", "--uri", "model"]) == 0
    captured = capsys.readouterr()
    assert "0x57535044" in captured.out
    assert "wirespeed core at model" in captured.out
    assert captured.err == ""


def test_demo_json(capsys):
    result = run_json(capsys, ["demo", "--uri", "model", "--json", "--requests", "120", "--seed", "7"])
    assert result["uri"] == "model" and result["seed"] == 7 and result["requests"] == 120
    assert sum(row["requests"] for row in result["tenants"]) == 120
    assert result["telemetry"]["events"] == 120
    assert result["throughput"] is None and result["throughput_note"]


def test_demo_text(capsys):
    assert main(["demo", "--uri", "model", "--requests", "50", "--seed", "7"]) == 0
    captured = capsys.readouterr()
    assert "wirespeed demo on model (seed 7): 50 requests" in captured.out
    assert "requests classified: 50/50" in captured.err


@pytest.mark.parametrize("argv, name", [
    (["info", "--uri", "bogus:x"], "DeviceNotFound"),
    (["info", "--uri", "bogus:x", "--json"], "DeviceNotFound"),
    (["demo", "--uri", "uio:"], "TransportError"),
    (["info", "--uri", "pci:zz"], "TransportError"),
])
def test_error_is_two_lines_and_exit_1(capsys, argv, name):
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 2, captured.err
    assert lines[0].startswith(f"wirespeed {argv[0]}: {name}: ")
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_debug_env_raises(monkeypatch):
    from wirespeed.host.errors import DeviceNotFound
    monkeypatch.setenv("WIRESPEED_DEBUG", "1")
    with pytest.raises(DeviceNotFound):
        main(["info", "--uri", "bogus:x"])


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_regs_c_header(tmp_path, capsys):
    out = tmp_path / "regs"
    assert main(["regs", "--format", "c-header", "--out", str(out)]) == 0
    header = out / "wirespeed_regs.h"
    assert header.is_file()
    text = header.read_text()
    assert "#define WIRESPEED_ID__MAGIC__VALUE_reset 0x57535044" in text
    assert "#define WIRESPEED_CORE__ID__MAGIC_ADDR 0x0000u" in text
    scratch = core_regmap()["id.scratch"].address
    assert f"#define WIRESPEED_CORE__ID__SCRATCH_ADDR 0x{scratch:04x}u" in text
    assert f"wrote {header}" in capsys.readouterr().out
    # only the format asked for
    assert sorted(p.name for p in out.iterdir()) == ["wirespeed_regs.h"]


def test_regs_json(tmp_path, capsys):
    out = tmp_path / "regs"
    result = run_json(capsys, ["regs", "--format", "c-header", "--out", str(out), "--json"])
    assert result == {"written": [str(out / "wirespeed_regs.h")]}


def test_verilog(tmp_path, capsys):
    path = tmp_path / "sub" / "x.v"
    assert main(["verilog", "--out", str(path)]) == 0
    text = path.read_text()
    assert "module wirespeed_core" in text
    assert "endmodule" in text
    assert "wrote" in capsys.readouterr().out


def test_bench_model_json(capsys):
    result = run_json(capsys, ["bench", "--uri", "model", "--accesses", "200", "--width", "--model-requests", "200",
                               "--limiter-requests", "0", "--router-requests", "0", "--placement-capacity", "64",
                               "--maglev-backends", "--core-packets", "0", "--core-model-requests", "100",
                               "--software-requests", "300", "--baseline-requests", "300", "--json"])
    entry = result["register_access"]["model"]
    assert entry["accesses"] == 200
    assert entry["accesses_per_s"] > 0
    assert entry["seconds"] >= 0
    assert result["parser_rtl"] == []
    assert result["parser_model"]["requests"] == 200 and result["parser_model"]["requests_per_s"] > 0
    assert result["core_rtl"] == [] and result["core_sim_cycles_per_s"] is None
    assert result["core_model"]["requests"] == 100 and result["core_model"]["requests_per_s"] > 0
    software = result["software"]
    assert software["requests"] == 300 and software["requests_per_s"] > 0 and software["gathered_requests_per_s"] > 0
    assert software["fast"] + software["fallback"] == 300 and software["fast"] > software["fallback"]
    assert software["native"] is True or isinstance(software["native"], str)         # the C reader, or why not
    base = result["software_baseline"]
    assert base["requests"] == 300 and base["requests_per_s"] > 0
    assert sum(base["statuses"].values()) == 300 and base["statuses"]["200"] > 200


# -- version, `python -m wirespeed`, a closed pipe ---------------------------------------------------------------------

def test_version_is_pyprojects(capsys):
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert wirespeed.__version__ == importlib.metadata.version("wirespeed") == pyproject["project"]["version"], \
        "the installed metadata is older than pyproject.toml: reinstall (`make venv`)"
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"wirespeed {wirespeed.__version__}\n"


def _cli(*argv, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """``python -m wirespeed argv`` in a child process, without WIRESPEED_DEBUG."""
    env = {k: v for k, v in os.environ.items() if k != "WIRESPEED_DEBUG"}
    return subprocess.run([sys.executable, "-m", "wirespeed", *argv], stdout=stdout, stderr=subprocess.PIPE,
                          env=env, timeout=120)


def test_python_dash_m_is_the_same_command_line():
    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.decode() == f"wirespeed {wirespeed.__version__}\n"
    done = _cli("info", "--uri", "model", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["magic"] == "0x57535044"


@pytest.mark.parametrize("argv", [("demo", "--uri", "model", "--json", "--requests", "50"), ("info", "--uri", "model")])
def test_a_closed_pipe_ends_quietly(argv):
    # `wirespeed demo --json | head`: the reader is gone before the first write (its end closed before the child
    # starts), so every write fails with EPIPE, deterministically.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = _cli(*argv, stdout=write_end)
    finally:
        os.close(write_end)
    assert done.stderr == b"", done.stderr.decode()
    assert done.returncode == 141                 # 128 + SIGPIPE, as a tool SIGPIPE ended (`yes | head`)
