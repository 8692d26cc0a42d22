"""Named exceptions of the host driver. Every failure a user can cause or meet has one."""

__all__ = ["WirespeedError", "DeviceNotFound", "IncompatibleBitstream", "ConfigError", "TransportError", "BusError",
           "TableFull", "FeatureMissing", "TableOpError", "check_int"]


class WirespeedError(Exception):
    """Base of every wirespeed error."""


class DeviceNotFound(WirespeedError):
    """The URI names a device, file or overlay that is not there."""


class IncompatibleBitstream(WirespeedError):
    """The core's ID block has the wrong magic or a major version this driver does not support."""


class ConfigError(WirespeedError, ValueError):
    """A configuration value is out of range. Raised before anything is written to the device.

    Attributes ``field``, ``value`` and ``limit`` name what was wrong.
    """

    def __init__(self, field: str, value, limit: str):
        self.field, self.value, self.limit = field, value, limit
        super().__init__(f"{field}={value!r} is invalid: {limit}")


def check_int(field: str, value, lo: int, hi: int) -> int:
    """``value`` if it is an integer (not a bool) in ``lo..hi``; otherwise :class:`ConfigError` naming the field."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(field, value, f"must be an integer in {lo}..{hi}")
    return value


class TransportError(WirespeedError):
    """A transport cannot carry out an access (bad URI, unaligned or out-of-window address, closed transport)."""


class BusError(WirespeedError):
    """The core answered an access with SLVERR or DECERR."""

    def __init__(self, op: str, address: int, resp: str):
        self.op, self.address, self.resp = op, address, resp
        super().__init__(f"{op} at 0x{address:08x} answered {resp}")


class TableFull(WirespeedError):
    """A hardware table has no room left: ``table`` is ``"tenants"`` or ``"plans"``."""

    def __init__(self, table: str, detail: str = ""):
        self.table = table
        super().__init__(f"{table} table is full" + (f": {detail}" if detail else ""))


class FeatureMissing(WirespeedError):
    """The core was built without a pipeline the call needs (``feature`` names it, as in ``id.features``)."""

    def __init__(self, feature: str):
        self.feature = feature
        super().__init__(f"the core has no {feature} (id.features.{feature} = 0); "
                         f"use a bitstream built with the {feature!r} feature")


class TableOpError(WirespeedError):
    """The limiter refused a table op, or a slot does not hold what the driver put there.

    Either is a driver bug or a device the driver does not own alone (another process, a reload without reset).
    """
