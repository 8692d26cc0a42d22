"""Elaborate once: generated Verilog cached by a hash of the gateware's sources and the design's parameters.

``cached_verilog("wirespeed_core", lambda: WirespeedCore(params), params)`` returns the Verilog text. On a hit it
reads ``build/verilog/<top>-<hash>.v`` and does no Amaranth elaboration (the whole core takes ~20 s to elaborate).
The hash covers every file under ``hdl/`` (``.py`` and ``.rdl``), any other module of the package the gateware
imports (followed transitively; none today, since ``hdl`` imports neither ``host`` nor ``sim``), the Amaranth version,
the top name and ``repr(params)``; editing any of them misses.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import os
import tempfile
from pathlib import Path

from .toolchain import REPO_ROOT, build_root

__all__ = ["cached_verilog", "source_digest", "gateware_sources"]

_PACKAGE_DIRS = {"hdl": REPO_ROOT / "hdl", "host": REPO_ROOT / "host", "sim": REPO_ROOT / "sim"}


def _imports(path: Path) -> set[Path]:
    """Files of this package that ``path`` imports (relative imports ``..host.x``, ``.x``; absolute ``wirespeed.*``)."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        parts = (node.module or "").split(".")
        if node.level == 0:
            if parts[0] != "wirespeed":
                continue
            parts = parts[1:]
            base = REPO_ROOT
        else:
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
        candidates = [base.joinpath(*parts)] if parts and parts != [""] else [base]
        names = [a.name for a in node.names]
        for c in candidates:
            if c.with_suffix(".py").exists():
                found.add(c.with_suffix(".py"))
            elif (c / "__init__.py").exists():
                found.add(c / "__init__.py")
                found.update(c / f"{n}.py" for n in names if (c / f"{n}.py").exists())
    return {p.resolve() for p in found if REPO_ROOT in p.resolve().parents}


@functools.cache
def gateware_sources() -> tuple[Path, ...]:
    """Every file the generated Verilog can depend on: ``hdl/`` and what it imports from the rest of the package."""
    hdl = _PACKAGE_DIRS["hdl"]
    files = {p.resolve() for p in hdl.rglob("*") if p.suffix in (".py", ".rdl") and "__pycache__" not in p.parts}
    todo = [p for p in files if p.suffix == ".py"]
    while todo:
        for dep in _imports(todo.pop()):
            if dep not in files:
                files.add(dep)
                todo.append(dep)
    return tuple(sorted(files))


def source_digest() -> str:
    """sha256 over the gateware sources' paths and contents and the Amaranth version."""
    import amaranth
    h = hashlib.sha256(f"amaranth {amaranth.__version__}\n".encode())
    for path in gateware_sources():
        h.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _canonical(value) -> str:
    """A repr that does not depend on hash order (sets are sorted), so the key is the same in every process."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(f"{f.name}={_canonical(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return f"{type(value).__name__}({inner})"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(_canonical(v) for v in value)) + "}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_canonical(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_canonical(k)}: {_canonical(v)}" for k, v in sorted(value.items(), key=str)) + "}"
    return repr(value)


def cached_verilog(top: str, make_component, params=None) -> str:
    """The Verilog of ``make_component()`` with module name ``top``, elaborated only when nothing cached matches."""
    key = hashlib.sha256(f"{source_digest()}\n{top}\n{_canonical(params)}".encode()).hexdigest()[:16]
    path = build_root() / "verilog" / f"{top}-{key}.v"
    if path.exists():
        return path.read_text()
    from .runner import to_verilog
    text = to_verilog(make_component(), top)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return text
