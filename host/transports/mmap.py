"""Memory-mapped transports: the core's AXI4-Lite window seen through a mapped file.

``Offload`` ─▶ :class:`MmapTransport` ─▶ ``mmap`` of ``/dev/uioN`` (``uio:``) or
``<sysfs>/bus/pci/devices/<bdf>/resourceN``
(``pci:``) ─▶ CPU loads and stores ─▶ the interconnect ─▶ the core's register bank.

Every register access is one aligned 32-bit load or store; nothing here ever touches the window a byte at a time.
Any file that can be mapped works, which is how the tests run without hardware: a regular file stands in for the device
and a directory named by ``WIRESPEED_SYSFS`` stands in for ``/sys``.
"""

from __future__ import annotations

import errno
import mmap
import operator
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import DeviceNotFound, TransportError
from .base import Transport, check_access

__all__ = ["MmapTransport", "open_uio", "open_pci", "sysfs_root", "SYSFS_ENV"]

#: Environment variable that relocates the sysfs root (default ``/sys``); tests point it at a stand-in tree.
SYSFS_ENV = "WIRESPEED_SYSFS"

_PERMISSION_HINT = "run as root or add a udev rule that gives your user read/write access to it"

# Domain is optional (the short form ``03:00.0`` means domain 0000); device is 5 bits, function 3 bits.
_BDF = re.compile(r"^(?:(?P<domain>[0-9a-fA-F]{4}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<dev>[01][0-9a-fA-F])\.(?P<fn>[0-7])$")
_BAR = re.compile(r"^bar(?P<n>\d+)$")
_UIO = re.compile(r"^uio(?P<n>\d+)$")
_PCI_BARS = range(6)


def sysfs_root() -> Path:
    """The sysfs mount point: ``$WIRESPEED_SYSFS`` if set, else ``/sys``.

    Read on every call (not at import) so a test can point it at a temporary tree with ``monkeypatch.setenv``.
    """
    return Path(os.environ.get(SYSFS_ENV) or "/sys")


def _as_word(value) -> int:
    """``value`` as a plain ``int`` in 0..2**32-1, or :class:`TransportError`."""
    try:
        # operator.index refuses floats and strings, which numpy would otherwise silently truncate or parse.
        word = operator.index(value)
    except TypeError:
        raise TransportError(f"value {value!r} is not an integer") from None
    check_access(0, None, word)
    return word


def _check_block(address: int, count: int, size: int) -> None:
    """Validate a ``count``-word access at ``address`` as a whole, before any word of it is touched."""
    if count < 0:
        raise TransportError(f"word count {count} is negative")
    check_access(address, size)
    if count:
        check_access(address + 4 * (count - 1), size)


def _open_rw(path: Path) -> int:
    """Open ``path`` read/write, synchronously if the file system allows, mapping OS errors to wirespeed errors."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    try:
        try:
            # O_SYNC asks for an uncached mapping where the driver honours it (/dev/mem, some UIO drivers): register
            # reads must see the hardware, not a cache line.
            return os.open(path, flags | os.O_SYNC)
        except OSError as e:
            # Some file systems refuse O_SYNC; the mapping is still correct without it for sysfs and UIO, whose
            # drivers choose the page attributes themselves.
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            return os.open(path, flags)
    except FileNotFoundError:
        raise DeviceNotFound(f"{path} does not exist") from None
    except PermissionError:
        raise TransportError(f"permission denied opening {path} read/write: {_PERMISSION_HINT}") from None
    except IsADirectoryError:
        raise TransportError(f"{path} is a directory, not a device file") from None
    except OSError as e:
        raise TransportError(f"cannot open {path}: {e.strerror or e}") from None


class MmapTransport(Transport):
    """Register access through an ``mmap`` of a device file (UIO node, PCI ``resourceN``, ``/dev/mem``, a plain file).

    Parameters
    ----------
    path : str or os.PathLike
        The file to map.
    offset : int, optional
        Byte offset of the register window in the file; must be 4-byte aligned. It need not be page aligned: the
        mapping starts at the page below and register addresses are shifted by the difference.
    size : int, optional
        Size of the register window in bytes. Defaults to the file size minus ``offset``, which is right for a PCI
        ``resourceN`` file and a plain file but unknown (0) for character devices, which must pass it.

    Raises
    ------
    DeviceNotFound
        ``path`` does not exist.
    TransportError
        Permission denied (with a hint), a bad offset or size, or the mapping failed.

    Notes
    -----
    Access is exactly 32 bits wide. The window is viewed as a little-endian ``uint32`` numpy array and each
    :meth:`read32`/:meth:`write32` indexes one element, which numpy compiles to one aligned 4-byte load or store. A
    byte-wise path (``mm[a:a+4] = ...``, ``struct.pack_into``, ``memcpy``) would be wrong: a PCIe BAR or AXI4-Lite
    bridge turns each byte store into its own write with a one-byte strobe, so a register would be written four times,
    three of them with a partial value, and a write-one-to-clear or pulse field would act on each; a byte load of a
    read-to-clear counter would clear it after the first byte.
    """

    scheme = "mmap"

    def __init__(self, path, offset: int = 0, size: int | None = None):
        self.path = Path(path)
        if offset < 0 or offset % 4:
            raise TransportError(f"offset {offset:#x} into {self.path} is not a non-negative multiple of 4")
        self._words = None
        self._mm = None
        fd = _open_rw(self.path)
        try:
            if size is None:
                size = os.fstat(fd).st_size - offset
                if size <= 0:
                    raise TransportError(f"cannot tell the size of the register window in {self.path} "
                                         f"(file size {os.fstat(fd).st_size:#x}, offset {offset:#x}); pass size=")
            if size < 4 or size % 4:
                raise TransportError(f"register window size {size:#x} is not a positive multiple of 4")
            # mmap offsets must be multiples of the allocation granularity (the page size on Linux).
            page = mmap.ALLOCATIONGRANULARITY
            base = offset - offset % page
            delta = offset - base
            try:
                self._mm = mmap.mmap(fd, delta + size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                                     offset=base)
            except PermissionError:
                raise TransportError(f"permission denied mapping {self.path}: {_PERMISSION_HINT}") from None
            except (OSError, ValueError) as e:
                raise TransportError(f"cannot map {size:#x} bytes at offset {offset:#x} of {self.path}: {e}") from None
        finally:
            # The mapping keeps its own reference to the file; the descriptor is not needed past this point.
            os.close(fd)
        self.offset = offset
        self.size = size
        self._words = np.frombuffer(self._mm, dtype="<u4", count=size // 4, offset=delta)

    def _live(self) -> np.ndarray:
        if self._words is None:
            raise TransportError(f"{self.scheme} transport on {self.path} is closed")
        return self._words

    def read32(self, address: int) -> int:
        words = self._live()
        check_access(address, self.size)
        return int(words[address >> 2])

    def write32(self, address: int, value: int) -> None:
        words = self._live()
        check_access(address, self.size)
        words[address >> 2] = _as_word(value)

    def read_block(self, address: int, count: int) -> list[int]:
        """Read ``count`` consecutive words starting at ``address``, one 32-bit load each, in address order."""
        words = self._live()
        _check_block(address, count, self.size)
        # ``tolist`` on the slice view reads element by element with aligned 4-byte loads. Copying the slice instead
        # (``np.array(view)``, ``view.copy()``) goes through memmove, whose wide and overlapping loads could read a
        # read-to-clear register twice or issue reads wider than the bus carries.
        return words[address >> 2:(address >> 2) + count].tolist()

    def write_block(self, address: int, values: Sequence[int] | Iterable[int]) -> None:
        """Write consecutive words starting at ``address``, one 32-bit store each, in address order.

        Every value and the whole range are checked first, so a bad value writes nothing.
        """
        words = self._live()
        values = [_as_word(v) for v in values]
        _check_block(address, len(values), self.size)
        view = words[address >> 2:(address >> 2) + len(values)]
        # Element stores, not ``view[:] = values``: slice assignment is a memmove, with the same hazards as above.
        for i, value in enumerate(values):
            view[i] = value

    def close(self) -> None:
        """Unmap the window. Idempotent; any access afterwards raises :class:`TransportError`."""
        # The numpy view holds an export of the mmap buffer; it must go before the mmap can close.
        self._words = None
        if self._mm is not None:
            mm, self._mm = self._mm, None
            mm.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._words is None else f"{self.size:#x} bytes at {self.offset:#x}"
        return f"<{type(self).__name__} {self.scheme}:{self.path} {state}>"

    # -- URI forms ----------------------------------------------------------------------------------------------------

    @classmethod
    def open_uio(cls, spec, map_index: int = 0) -> "MmapTransport":
        """Map register region ``map_index`` of a UIO device, for the URI ``uio:/dev/uioN``.

        Parameters
        ----------
        spec : str or os.PathLike
            Path of the UIO node. Any path is accepted (a stand-in file in tests); its basename must be ``uioN``,
            which names the sysfs entry ``<sysfs>/class/uio/uioN``.
        map_index : int, optional
            Which of the device's memory regions to map; the core's register window is region 0.

        Notes
        -----
        The UIO driver selects region N by the mmap offset ``N * pagesize`` (the offset is not a position in a
        file). The region's size is read from ``<sysfs>/class/uio/uioN/maps/mapN/size`` (hex) and, if the region
        does not start on a page boundary, its position within the first page from ``.../mapN/offset``. When the
        sysfs entry is absent (a stand-in file instead of a device) the window is the whole file.
        """
        path = Path(spec)
        m = _UIO.match(path.name)
        if m is None:
            raise TransportError(f"UIO path {str(spec)!r}: the device name {path.name!r} is not of the form uioN")
        if map_index < 0:
            raise TransportError(f"UIO map index {map_index} is negative")
        map_dir = sysfs_root() / "class" / "uio" / path.name / "maps" / f"map{map_index}"
        size = _read_sysfs_int(map_dir / "size")
        in_page = _read_sysfs_int(map_dir / "offset") or 0
        transport = cls(path, offset=map_index * mmap.PAGESIZE + in_page, size=size)
        transport.scheme = "uio"
        return transport

    @classmethod
    def open_pci(cls, spec: str) -> "MmapTransport":
        """Map a PCI BAR through sysfs, for the URI ``pci:<bdf>[/barN]``.

        Parameters
        ----------
        spec : str
            ``<bdf>[/barN]``: a bus/device/function such as ``0000:03:00.0`` or the short ``03:00.0`` (domain 0000),
            optionally followed by ``/bar0`` .. ``/bar5``; the default is ``bar0``.

        Notes
        -----
        Maps ``<sysfs>/bus/pci/devices/<bdf>/resourceN``, whose file size is the BAR size. The device's memory
        decoding must be enabled (bind it to a driver such as ``vfio-pci``/``uio_pci_generic``, or write ``1`` to its
        sysfs ``enable`` file), or reads return all ones.
        """
        bdf_text, _, bar_text = str(spec).partition("/")
        m = _BDF.match(bdf_text)
        if m is None:
            raise TransportError(f"PCI address {bdf_text!r} is not a bus/device/function like 0000:03:00.0 or 03:00.0")
        bdf = f"{m['domain'] or '0000'}:{m['bus']}:{m['dev']}.{m['fn']}".lower()
        bar = 0
        if bar_text:
            b = _BAR.match(bar_text.lower())
            if b is None:
                raise TransportError(f"PCI BAR {bar_text!r} in {spec!r} is not of the form barN")
            bar = int(b["n"])
            if bar not in _PCI_BARS:
                raise TransportError(f"PCI BAR {bar_text!r} in {spec!r} is out of range: a device has bar0..bar5")
        device_dir = sysfs_root() / "bus" / "pci" / "devices" / bdf
        if not device_dir.is_dir():
            raise DeviceNotFound(f"no PCI device {bdf} ({device_dir} does not exist)")
        resource = device_dir / f"resource{bar}"
        if not resource.exists():
            # sysfs only creates resourceN for BARs that are implemented; the upper half of a 64-bit BAR has none.
            raise DeviceNotFound(f"PCI device {bdf} has no BAR {bar} ({resource} does not exist)")
        transport = cls(resource)
        transport.scheme = "pci"
        return transport


def _read_sysfs_int(path: Path) -> int | None:
    """An integer sysfs attribute (``0x`` hex or decimal), or None when the file is absent."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise TransportError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return int(text, 0)
    except ValueError:
        raise TransportError(f"{path} holds {text!r}, not an integer") from None


#: ``uio:`` URI constructor; see :meth:`MmapTransport.open_uio`.
open_uio = MmapTransport.open_uio
#: ``pci:`` URI constructor; see :meth:`MmapTransport.open_pci`.
open_pci = MmapTransport.open_pci
