"""PeakRDL register-map exports (wirespeed.host.tools.export): drift of docs/registers.md, and each format's output."""

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from wirespeed.host.tools.export import (BLOCKS, DOCS_REGISTERS, FORMATS, OUTPUTS, VLNV, docs_path, export,
                                         render_markdown)
from wirespeed.hdl.bus.regmap import core_regmap

IPXACT_NS = {"ipxact": "http://www.accellera.org/XMLSchema/IPXACT/1685-2014"}
MAGIC = 0x57535044


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("regs")
    for fmt in FORMATS:
        extra = [out / docs_path(b).name for b in BLOCKS] if fmt == "markdown" else []
        assert export(fmt, out) == [out / OUTPUTS[fmt], *extra]
    return out


@pytest.mark.parametrize("block", [None, *BLOCKS])
def test_docs_registers_up_to_date(block):
    # The tests run from a checkout, and the package they import must be that checkout (an editable install): a
    # wheel has no docs/ to compare, and a silent skip would hide a stale reference.
    assert DOCS_REGISTERS.parent.parent == Path(__file__).resolve().parents[2], \
        f"wirespeed is imported from {DOCS_REGISTERS.parent.parent}, not from this checkout: pip install -e ."
    how = ("regenerate it with `make regs` / `wirespeed regs --format markdown --out docs` "
           "and commit the result")
    path = docs_path(block)
    assert path.is_file(), f"{path} is missing: {how}"
    assert path.read_text(encoding="utf-8") == render_markdown(block), f"{path} is out of date with hdl/<block>/*.rdl: {how}"


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError) as exc:
        export("pdf", tmp_path)
    for fmt in FORMATS:
        assert fmt in str(exc.value)
    assert not any(tmp_path.iterdir())


def _c_ident(path) -> str:
    """The header's name for a register; array element ``data[3]`` is ``DATA_3``."""
    return "__".join(("WIRESPEED_CORE", *path)).upper().replace("[", "_").replace("]", "")


def test_c_header_compiles_and_matches_regmap(exported, tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed")
    header = exported / "wirespeed_regs.h"
    text = header.read_text()
    regmap = core_regmap()
    magic = regmap["id.magic"]
    assert magic.reset == MAGIC
    assert f"#define {_c_ident(magic.path)}_ADDR 0x{magic.address:04x}u" in text
    assert "#define WIRESPEED_ID__MAGIC__VALUE_reset 0x57535044" in text

    # The header alone, then a file that checks every address define and the struct layout against the RegMap.
    subprocess.run([gcc, "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-x", "c", str(header)], check=True)
    checks = ["#include <stddef.h>", f'#include "{header}"']
    for reg in regmap.registers:
        checks.append(f'_Static_assert({_c_ident(reg.path)}_ADDR == {reg.address:#x}, "{reg.name} address");')
        checks.append(f'_Static_assert(offsetof(wirespeed_core_t, {reg.name}) == {reg.address:#x}, '
                      f'"{reg.name} struct offset");')
    checks.append(f'_Static_assert(WIRESPEED_ID__MAGIC__VALUE_reset == {magic.reset:#x}u, "magic reset");')
    check_c = tmp_path / "check_regs.c"
    check_c.write_text("\n".join(checks) + "\n")
    result = subprocess.run([gcc, "-fsyntax-only", "-Wall", "-Werror", str(check_c)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _hex(text: str) -> int:
    text = text.strip()
    return int(text[2:], 16) if text.startswith("'h") else int(text, 0)


def _ipxact_registers(parent, base: int, prefix: tuple) -> dict:
    """name -> absolute address, descending through registerFiles."""
    found = {}
    for el in parent:
        tag = el.tag.split("}")[-1]
        if tag not in ("register", "registerFile"):
            continue
        name = el.findtext("ipxact:name", namespaces=IPXACT_NS)
        address = base + _hex(el.findtext("ipxact:addressOffset", namespaces=IPXACT_NS))
        dim = el.findtext("ipxact:dim", namespaces=IPXACT_NS)
        if tag == "register" and dim is not None:          # an array: elements at the register's size apart
            stride = int(el.findtext("ipxact:size", namespaces=IPXACT_NS)) // 8
            for i in range(int(dim)):
                found[".".join(prefix + (f"{name}[{i}]",))] = address + i * stride
        elif tag == "register":
            found[".".join(prefix + (name,))] = address
        else:
            assert dim is None, "register file arrays: extend this walker"
            found.update(_ipxact_registers(el, address, prefix + (name,)))
    return found


def test_ipxact(exported):
    root = ET.parse(exported / "wirespeed_core.xml").getroot()
    assert root.tag == f"{{{IPXACT_NS['ipxact']}}}component"
    vlnv = tuple(root.findtext(f"ipxact:{k}", namespaces=IPXACT_NS) for k in ("vendor", "library", "name", "version"))
    assert vlnv == VLNV == ("wirespeed.dev", "offload", "wirespeed_core", "1.0")

    found = {}
    for block in root.iterfind("ipxact:memoryMaps/ipxact:memoryMap/ipxact:addressBlock", IPXACT_NS):
        name = block.findtext("ipxact:name", namespaces=IPXACT_NS)
        base = _hex(block.findtext("ipxact:baseAddress", namespaces=IPXACT_NS))
        found.update(_ipxact_registers(block, base, (name,)))
    expected = {reg.name: reg.address for reg in core_regmap().registers}
    assert found == expected


def test_markdown_and_html(exported):
    md = (exported / "registers.md").read_text(encoding="utf-8")
    assert md.startswith("<!--") and "wirespeed regs --format markdown --out docs" in md.splitlines()[0]
    assert md == render_markdown()
    for reg in core_regmap().registers:
        assert f"### {reg.path[-1].split('[')[0]} register" in md     # an array is described once
    html = exported / "html"
    assert (html / "index.html").stat().st_size > 0
    pages = list((html / "content").glob("*.html"))
    assert pages and all(p.stat().st_size > 0 for p in pages)


def _tree_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_exports_are_deterministic(exported, tmp_path):
    for fmt in FORMATS:
        export(fmt, tmp_path)
    assert _tree_bytes(tmp_path) == _tree_bytes(exported)
    # Re-exporting over a previous export gives the same files (HTML is replaced, not merged).
    for fmt in FORMATS:
        export(fmt, tmp_path)
    assert _tree_bytes(tmp_path) == _tree_bytes(exported)


def test_html_refuses_foreign_folder(tmp_path):
    (tmp_path / "html").mkdir()
    (tmp_path / "html" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export("html", tmp_path)
    assert (tmp_path / "html" / "notes.txt").read_text() == "mine"
