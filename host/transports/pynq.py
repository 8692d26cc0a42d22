"""PYNQ transport: the core inside a PYNQ overlay, reached through ``pynq.MMIO``.

``Offload`` ─▶ :class:`PynqTransport` ─▶ ``pynq.MMIO`` ─▶ the PYNQ device (``/dev/mem`` on Zynq, XRT on Alveo)
─▶ the core's AXI4-Lite register bank.

``pynq`` is an optional dependency (``pip install 'wirespeed[pynq]'``); it is imported only when a transport is built,
so the rest of the driver works without it.
"""

from __future__ import annotations

import importlib
import operator
import os
from typing import Iterable, Mapping, Sequence

from ..errors import DeviceNotFound, TransportError
from .base import Transport, check_access

__all__ = ["PynqTransport", "VLNV", "find_core", "mmio_transport"]

#: The IP-XACT VLNV the core is packaged under. Overlays are searched by everything but the version, so a bitstream
#: built from a newer core is still found; the ID block check in ``Offload`` decides whether it is compatible.
VLNV = "wirespeed.dev:offload:wirespeed_core:1.0"

_VLN_PREFIX = VLNV.rpartition(":")[0] + ":"
_INSTALL_HINT = "install it with: pip install 'wirespeed[pynq]'"


def _import_pynq():
    try:
        return importlib.import_module("pynq")
    except ImportError as e:
        raise DeviceNotFound(f"the pynq transport needs the pynq package ({e}); {_INSTALL_HINT}") from None


def _as_word(value) -> int:
    """``value`` as a plain ``int`` in 0..2**32-1, or :class:`TransportError`."""
    try:
        # pynq 4.0.0's MMIO.write dispatches on ``type(data) is int``: a numpy integer, bool or IntEnum is refused
        # with ValueError, so every value is turned into an exact ``int`` here.
        word = operator.index(value)
    except TypeError:
        raise TransportError(f"value {value!r} is not an integer") from None
    check_access(0, None, word)
    return int(word)


def _check_block(address: int, count: int, size: int) -> None:
    if count < 0:
        raise TransportError(f"word count {count} is negative")
    check_access(address, size)
    if count:
        check_access(address + 4 * (count - 1), size)


def find_core(ip_dict: Mapping[str, Mapping], ip_name: str | None = None) -> tuple[str, Mapping]:
    """Find the wirespeed core in an overlay's ``ip_dict``.

    Parameters
    ----------
    ip_dict : Mapping
        ``overlay.ip_dict``: IP instance name to description (``phys_addr``, ``addr_range``, ``type`` = VLNV, ...).
    ip_name : str, optional
        Take this instance, whatever its VLNV. By default the first instance whose VLNV matches :data:`VLNV` up to
        the version.

    Returns
    -------
    (str, Mapping)
        The instance name and its description.

    Raises
    ------
    DeviceNotFound
        No such instance; the message lists the IPs the overlay has.
    """
    if ip_name is not None:
        if ip_name in ip_dict:
            return ip_name, ip_dict[ip_name]
        raise DeviceNotFound(f"the overlay has no IP named {ip_name!r}; {_describe(ip_dict)}")
    for name, desc in ip_dict.items():
        if str(desc.get("type", "")).startswith(_VLN_PREFIX):
            return name, desc
    raise DeviceNotFound(f"the overlay has no wirespeed core ({_VLN_PREFIX}*); {_describe(ip_dict)}")


def _describe(ip_dict: Mapping[str, Mapping]) -> str:
    if not ip_dict:
        return "it has no IPs"
    return "IPs found: " + ", ".join(f"{name} ({desc.get('type', '?')})" for name, desc in ip_dict.items())


class PynqTransport(Transport):
    """Register access to the core in a PYNQ overlay.

    Parameters
    ----------
    bitfile : str or os.PathLike or None
        The ``.bit``/``.xclbin`` to load as ``pynq.Overlay(bitfile, device=device)``. Ignored (may be None) when
        ``overlay`` is given.
    ip_name : str, optional
        The core's instance name in the block design; by default found by :data:`VLNV` (see :func:`find_core`).
    device : pynq.Device, optional
        The PYNQ device; default the one the overlay was loaded on, else ``pynq.Device.active_device``.
    overlay : pynq.Overlay, optional
        An overlay the caller already loaded; anything with an ``ip_dict`` will do.

    Raises
    ------
    DeviceNotFound
        pynq is not installed, the bitfile does not exist or will not load, or the overlay holds no core.
    TransportError
        The core's description has no register window, or pynq cannot map it (e.g. not root on Zynq).
    """

    scheme = "pynq"

    def __init__(self, bitfile=None, ip_name: str | None = None, device=None, overlay=None):
        self.bitfile = bitfile
        if overlay is None:
            if bitfile is None:
                raise DeviceNotFound("the pynq transport needs a bitfile or an overlay")
            # Checked before pynq is imported so a typo in the path is reported as such, not as a pynq failure.
            if not os.path.exists(bitfile):
                raise DeviceNotFound(f"bitfile {os.fspath(bitfile)} does not exist")
            pynq = _import_pynq()
            try:
                overlay = pynq.Overlay(os.fspath(bitfile), device=device)
            except (OSError, RuntimeError, ValueError) as e:
                # pynq reports "no devices", a missing .hwh and a bad bitstream as these; all mean "not usable here".
                raise DeviceNotFound(f"pynq could not load {os.fspath(bitfile)}: {e}") from e
        self.overlay = overlay
        self.ip_name, desc = find_core(overlay.ip_dict, ip_name)
        try:
            base_addr, length = int(desc["phys_addr"]), int(desc["addr_range"])
        except (KeyError, TypeError, ValueError):
            raise TransportError(f"IP {self.ip_name!r} has no register window (phys_addr/addr_range) "
                                 "in the overlay") from None
        if device is None:
            # pynq stores the device in each description (and on the overlay); prefer it over the global default.
            device = desc.get("device", getattr(overlay, "device", None))
        self._attach(base_addr, length, device)

    @classmethod
    def from_mmio(cls, base_addr: int, length: int, device=None) -> "PynqTransport":
        """A transport on a bare ``pynq.MMIO`` window, without an overlay.

        For callers that already know where the core is (their own overlay, a hand-built block design) and for
        tests, which pass a stand-in device.

        Parameters
        ----------
        base_addr : int
            Physical address of the core's register window.
        length : int
            Window size in bytes.
        device : pynq.Device, optional
            Default ``pynq.Device.active_device``.
        """
        self = cls.__new__(cls)
        self.bitfile, self.overlay, self.ip_name = None, None, None
        self._attach(base_addr, length, device)
        return self

    def _attach(self, base_addr: int, length: int, device) -> None:
        self._mmio = None
        if length < 4 or length % 4:
            raise TransportError(f"register window length {length:#x} is not a positive multiple of 4")
        pynq = _import_pynq()
        try:
            mmio = pynq.MMIO(base_addr, length, device=device)
        except PermissionError as e:
            raise TransportError(f"pynq cannot map {base_addr:#x}: {e}; run as root") from None
        except (OSError, RuntimeError, ValueError) as e:
            # pynq raises EnvironmentError("Root permissions required.") on Zynq and ValueError for a device with
            # no MMIO capability.
            hint = "; run as root" if "root" in str(e).lower() else ""
            raise TransportError(f"pynq cannot map {length:#x} bytes at {base_addr:#x}: {e}{hint}") from None
        self.base_addr, self.size = base_addr, length
        self._mmio = mmio
        # Only a MEMORY_MAPPED device gives ``mmio.array`` as a real numpy view of the window; REGISTER_RW (XRT) and
        # REMOTE devices give a hooked stand-in, for which the per-word loops of the base class are the safe path.
        self._array = mmio.array if mmio.device.has_capability("MEMORY_MAPPED") else None

    @property
    def mmio(self):
        """The underlying ``pynq.MMIO``; raises :class:`TransportError` once closed."""
        return self._live()

    def _live(self):
        if self._mmio is None:
            raise TransportError(f"pynq transport at {getattr(self, 'base_addr', 0):#x} is closed")
        return self._mmio

    def read32(self, address: int) -> int:
        mmio = self._live()
        check_access(address, self.size)
        return int(mmio.read(address))

    def write32(self, address: int, value: int) -> None:
        mmio = self._live()
        check_access(address, self.size)
        mmio.write(address, _as_word(value))

    def read_block(self, address: int, count: int) -> list[int]:
        """Read ``count`` consecutive words starting at ``address``, one 32-bit load each, in address order."""
        self._live()
        _check_block(address, count, self.size)
        if self._array is None:
            return super().read_block(address, count)
        # ``tolist`` on the slice view loads element by element; a numpy copy of it would be a memmove, whose wide
        # and overlapping loads could read a read-to-clear register twice.
        return self._array[address >> 2:(address >> 2) + count].tolist()

    def write_block(self, address: int, values: Sequence[int] | Iterable[int]) -> None:
        """Write consecutive words starting at ``address``, one 32-bit store each; a bad value writes nothing."""
        self._live()
        values = [_as_word(v) for v in values]
        _check_block(address, len(values), self.size)
        if self._array is None:
            return super().write_block(address, values)
        view = self._array[address >> 2:(address >> 2) + len(values)]
        # Element stores, not ``view[:] = values`` (a memmove), for the same reason as in read_block.
        for i, value in enumerate(values):
            view[i] = value

    def close(self) -> None:
        """Drop the MMIO window. Idempotent; any access afterwards raises :class:`TransportError`.

        The overlay stays loaded: the bitstream belongs to the FPGA, not to this transport.
        """
        self._mmio = None
        self._array = None

    def __repr__(self) -> str:
        where = f"{self.ip_name} " if self.ip_name else ""
        state = "closed" if self._mmio is None else f"{self.size:#x} bytes at {self.base_addr:#x}"
        return f"<{type(self).__name__} {where}{state}>"


def mmio_transport(base_addr: int, length: int, device=None) -> PynqTransport:
    """Shorthand for :meth:`PynqTransport.from_mmio`."""
    return PynqTransport.from_mmio(base_addr, length, device)
