"""MmapTransport against stand-ins: a regular file as the device, a temporary directory as sysfs."""

import errno
import mmap
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wirespeed.host.errors import DeviceNotFound, TransportError
from wirespeed.host.transports.mmap import SYSFS_ENV, MmapTransport, open_pci, open_uio

WINDOW = 0x1000


def device_file(path, size=WINDOW):
    path.write_bytes(bytes(size))
    return path


def words_in(path, offset=0, count=None):
    data = path.read_bytes()[offset:]
    count = len(data) // 4 if count is None else count
    return list(struct.unpack(f"<{count}I", data[:4 * count]))


@pytest.fixture
def dev(tmp_path):
    return device_file(tmp_path / "dev")


def test_round_trip_and_file_bytes_are_little_endian(dev):
    with MmapTransport(dev) as t:
        assert t.size == WINDOW and t.scheme == "mmap"
        t.write32(0x10, 0x1234_5678)
        t.write32(WINDOW - 4, 0xFFFF_FFFF)
        assert t.read32(0x10) == 0x1234_5678
        assert t.read32(WINDOW - 4) == 0xFFFF_FFFF
        assert t.read32(0) == 0
    # MAP_SHARED: the stores are in the file, least significant byte first.
    with open(dev, "rb") as f:
        data = f.read()
    assert data[0x10:0x14] == bytes([0x78, 0x56, 0x34, 0x12])
    assert data[-4:] == b"\xff\xff\xff\xff"
    assert data.count(0) == WINDOW - 8


def test_reads_what_the_file_holds(dev):
    with open(dev, "r+b") as f:
        f.seek(0x20)
        f.write(bytes([0xEF, 0xBE, 0xAD, 0xDE]))
    with MmapTransport(dev) as t:
        value = t.read32(0x20)
    assert value == 0xDEAD_BEEF and type(value) is int


def test_blocks(dev):
    with MmapTransport(dev) as t:
        t.write_block(0x40, [1, 2, 0xFFFF_FFFF, 4])
        assert t.read_block(0x40, 4) == [1, 2, 0xFFFF_FFFF, 4]
        assert t.read_block(0x3C, 6) == [0, 1, 2, 0xFFFF_FFFF, 4, 0]
        assert t.read_block(0x40, 0) == []
        t.write_block(WINDOW - 8, iter([7, 8]))
        assert all(type(v) is int for v in t.read_block(WINDOW - 8, 2))
    assert words_in(dev, 0x40, 4) == [1, 2, 0xFFFF_FFFF, 4]
    assert words_in(dev, WINDOW - 8, 2) == [7, 8]


def test_block_errors_write_nothing(dev):
    with MmapTransport(dev) as t:
        with pytest.raises(TransportError, match="32 bits"):
            t.write_block(0, [1, 2, 1 << 32])
        with pytest.raises(TransportError, match="window"):
            t.write_block(WINDOW - 4, [1, 2])
        with pytest.raises(TransportError, match="window"):
            t.read_block(WINDOW - 4, 2)
        with pytest.raises(TransportError, match="negative"):
            t.read_block(0, -1)
    assert set(words_in(dev)) == {0}


@pytest.mark.parametrize("address", [1, 2, 3, 0x102, -4])
def test_unaligned_or_negative_address(dev, address):
    with MmapTransport(dev) as t:
        with pytest.raises(TransportError, match="aligned"):
            t.read32(address)
        with pytest.raises(TransportError, match="aligned"):
            t.write32(address, 0)


@pytest.mark.parametrize("address", [WINDOW, WINDOW + 4, 0x10_0000])
def test_outside_window(dev, address):
    with MmapTransport(dev) as t:
        with pytest.raises(TransportError, match="window"):
            t.read32(address)
        with pytest.raises(TransportError, match="window"):
            t.write32(address, 0)


@pytest.mark.parametrize("value", [-1, 1 << 32, 1.0, "1"])
def test_bad_values(dev, value):
    with MmapTransport(dev) as t:
        with pytest.raises(TransportError):
            t.write32(0, value)
    assert set(words_in(dev)) == {0}


def test_window_at_an_offset_and_size(tmp_path):
    dev = device_file(tmp_path / "dev", 3 * mmap.PAGESIZE)
    with MmapTransport(dev, offset=mmap.PAGESIZE, size=0x100) as t:
        assert t.size == 0x100
        t.write32(0, 0xA5A5_A5A5)
        with pytest.raises(TransportError, match="window"):
            t.read32(0x100)
    assert words_in(dev, mmap.PAGESIZE, 1) == [0xA5A5_A5A5]
    assert words_in(dev, 0, 1) == [0]


def test_offset_need_not_be_page_aligned(tmp_path):
    dev = device_file(tmp_path / "dev", 2 * mmap.PAGESIZE)
    with MmapTransport(dev, offset=mmap.PAGESIZE + 0x24) as t:
        assert t.size == mmap.PAGESIZE - 0x24
        t.write32(0, 0x0BAD_F00D)
        t.write32(t.size - 4, 0x600D_F00D)
    assert words_in(dev, mmap.PAGESIZE + 0x24, 1) == [0x0BAD_F00D]
    assert words_in(dev, 2 * mmap.PAGESIZE - 4, 1) == [0x600D_F00D]


@pytest.mark.parametrize("kwargs, match", [
    (dict(offset=2), "multiple of 4"),
    (dict(offset=-4), "multiple of 4"),
    (dict(size=6), "multiple of 4"),
    (dict(size=0), "multiple of 4"),
    (dict(size=2 * WINDOW), "cannot map"),
    (dict(offset=WINDOW), "size"),
])
def test_bad_window(dev, kwargs, match):
    with pytest.raises(TransportError, match=match):
        MmapTransport(dev, **kwargs)


def test_missing_file_is_device_not_found(tmp_path):
    with pytest.raises(DeviceNotFound, match=str(tmp_path / "nope")):
        MmapTransport(tmp_path / "nope")


def test_directory_is_a_transport_error(tmp_path):
    with pytest.raises(TransportError, match="directory"):
        MmapTransport(tmp_path)


def test_permission_denied_has_a_hint(dev, monkeypatch):
    if os.geteuid() == 0:
        # root ignores file modes; refuse the open the way the kernel would for anyone else.
        real_open = os.open

        def refusing_open(path, flags, *args):
            if os.fspath(path) == os.fspath(dev):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_open(path, flags, *args)

        monkeypatch.setattr(os, "open", refusing_open)
    else:
        dev.chmod(0o444)
    with pytest.raises(TransportError, match="udev rule") as info:
        MmapTransport(dev)
    assert not isinstance(info.value, DeviceNotFound)


def test_falls_back_without_o_sync(dev, monkeypatch):
    real_open = os.open
    tried = []

    def no_sync_open(path, flags, *args):
        tried.append(bool(flags & os.O_SYNC))
        if flags & os.O_SYNC:
            raise OSError(errno.EINVAL, "Invalid argument", os.fspath(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_sync_open)
    with MmapTransport(dev) as t:
        t.write32(0, 1)
    assert tried == [True, False]
    assert words_in(dev, 0, 1) == [1]


def test_close_is_idempotent_and_final(dev):
    t = MmapTransport(dev)
    t.write32(0, 5)
    t.close()
    t.close()
    for access in (lambda: t.read32(0), lambda: t.write32(0, 1), lambda: t.read_block(0, 1),
                   lambda: t.write_block(0, [1])):
        with pytest.raises(TransportError, match="closed"):
            access()
    assert "closed" in repr(t)
    assert words_in(dev, 0, 1) == [5]


def test_two_mappings_share_the_device(dev):
    # Stands for the device's view: what one mapping stores, another sees.
    with MmapTransport(dev) as a, MmapTransport(dev) as b:
        a.write32(0x80, 0xCAFE_F00D)
        assert b.read32(0x80) == 0xCAFE_F00D


@settings(derandomize=True, max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, WINDOW // 4 - 1), st.integers(0, 0xFFFF_FFFF)), max_size=40),
       st.lists(st.integers(0, WINDOW // 4 - 1), max_size=20))
def test_random_round_trips_match_a_dict_model(tmp_path, writes, reads):
    dev = device_file(tmp_path / "hyp")
    model = {}
    with MmapTransport(dev) as t:
        for index, value in writes:
            t.write32(4 * index, value)
            model[index] = value
        for index in reads + [index for index, _ in writes]:
            assert t.read32(4 * index) == model.get(index, 0)
    file_words = words_in(dev)
    assert file_words == [model.get(i, 0) for i in range(WINDOW // 4)]


# -- uio: ------------------------------------------------------------------------------------------------------------

def fake_uio(tmp_path, monkeypatch, n=3, size=None, in_page=None, maps=None):
    sysfs = tmp_path / "sys"
    monkeypatch.setenv(SYSFS_ENV, str(sysfs))
    for index, (map_size, map_offset) in enumerate(maps or [(size, in_page)]):
        map_dir = sysfs / "class" / "uio" / f"uio{n}" / "maps" / f"map{index}"
        map_dir.mkdir(parents=True)
        if map_size is not None:
            (map_dir / "size").write_text(f"0x{map_size:08x}\n")
        if map_offset is not None:
            (map_dir / "offset").write_text(f"0x{map_offset:x}\n")
    node = tmp_path / "dev" / f"uio{n}"
    node.parent.mkdir()
    return node


def test_uio_size_comes_from_sysfs(tmp_path, monkeypatch):
    node = fake_uio(tmp_path, monkeypatch, size=0x100)
    device_file(node, mmap.PAGESIZE)
    with open_uio(str(node)) as t:
        assert (t.scheme, t.size) == ("uio", 0x100)
        t.write32(0xFC, 0x1357_9BDF)
        with pytest.raises(TransportError, match="window"):
            t.read32(0x100)
    assert words_in(node, 0xFC, 1) == [0x1357_9BDF]


def test_uio_without_sysfs_uses_the_file_size(tmp_path, monkeypatch):
    monkeypatch.setenv(SYSFS_ENV, str(tmp_path / "empty-sys"))
    node = device_file(tmp_path / "uio0", 0x2000)
    with MmapTransport.open_uio(node) as t:
        assert (t.scheme, t.size) == ("uio", 0x2000)


def test_uio_map_n_is_selected_by_page_offset(tmp_path, monkeypatch):
    # A real UIO node is not a file: the mmap offset N * pagesize picks region N. A stand-in file has the regions
    # laid out page after page, which is what that offset reads.
    node = fake_uio(tmp_path, monkeypatch, n=1, maps=[(0x40, None), (0x80, 0x10)])
    device_file(node, 2 * mmap.PAGESIZE)
    with open_uio(node, map_index=1) as t:
        assert t.size == 0x80
        t.write32(0, 0x1111_2222)
    assert words_in(node, mmap.PAGESIZE + 0x10, 1) == [0x1111_2222]


def test_uio_missing_node(tmp_path, monkeypatch):
    node = fake_uio(tmp_path, monkeypatch, size=0x100)
    with pytest.raises(DeviceNotFound, match="uio3"):
        open_uio(node)


@pytest.mark.parametrize("name", ["uio", "uioX", "mem", "uio0a"])
def test_uio_bad_name(tmp_path, monkeypatch, name):
    monkeypatch.setenv(SYSFS_ENV, str(tmp_path))
    with pytest.raises(TransportError, match=name):
        open_uio(tmp_path / name)


def test_uio_garbled_sysfs_size(tmp_path, monkeypatch):
    node = fake_uio(tmp_path, monkeypatch, n=0, size=None)
    (tmp_path / "sys/class/uio/uio0/maps/map0/size").write_text("lots\n")
    device_file(node)
    with pytest.raises(TransportError, match="not an integer"):
        open_uio(node)


# -- pci: ------------------------------------------------------------------------------------------------------------

def fake_pci(tmp_path, monkeypatch, bdf="0000:03:00.0", bars={0: 0x1000, 2: 0x2000}):
    sysfs = tmp_path / "sys"
    monkeypatch.setenv(SYSFS_ENV, str(sysfs))
    device_dir = sysfs / "bus" / "pci" / "devices" / bdf
    device_dir.mkdir(parents=True)
    for bar, size in bars.items():
        device_file(device_dir / f"resource{bar}", size)
    return device_dir


@pytest.mark.parametrize("spec", ["0000:03:00.0/bar2", "03:00.0/bar2", "0000:03:00.0/BAR2"])
def test_pci_bar(tmp_path, monkeypatch, spec):
    device_dir = fake_pci(tmp_path, monkeypatch)
    with open_pci(spec) as t:
        assert (t.scheme, t.size) == ("pci", 0x2000)
        t.write32(0x1FFC, 0x89AB_CDEF)
    assert words_in(device_dir / "resource2", 0x1FFC, 1) == [0x89AB_CDEF]
    assert set(words_in(device_dir / "resource0")) == {0}


@pytest.mark.parametrize("spec", ["0000:03:00.0", "03:00.0"])
def test_pci_defaults_to_bar0(tmp_path, monkeypatch, spec):
    device_dir = fake_pci(tmp_path, monkeypatch)
    with open_pci(spec) as t:
        assert t.size == 0x1000
        t.write32(4, 42)
    assert words_in(device_dir / "resource0", 4, 1) == [42]


def test_pci_upper_case_hex_is_normalised(tmp_path, monkeypatch):
    fake_pci(tmp_path, monkeypatch, bdf="0000:af:1f.7")
    with open_pci("AF:1F.7") as t:
        assert t.size == 0x1000


@pytest.mark.parametrize("spec, bad", [
    ("3:00.0", "3:00.0"),
    ("0000:03:00", "0000:03:00"),
    ("0000:03:00.8", "0000:03:00.8"),
    ("0000:03:20.0", "0000:03:20.0"),
    ("zz:00.0", "zz:00.0"),
    ("", "''"),
])
def test_pci_bad_bdf(tmp_path, monkeypatch, spec, bad):
    fake_pci(tmp_path, monkeypatch)
    with pytest.raises(TransportError, match=bad):
        open_pci(spec)


@pytest.mark.parametrize("bar", ["bar9", "bar6", "bar", "b2", "bar-1"])
def test_pci_bad_bar(tmp_path, monkeypatch, bar):
    fake_pci(tmp_path, monkeypatch)
    with pytest.raises(TransportError, match=bar) as info:
        open_pci(f"0000:03:00.0/{bar}")
    assert not isinstance(info.value, DeviceNotFound)


def test_pci_bar9_names_the_range(tmp_path, monkeypatch):
    fake_pci(tmp_path, monkeypatch)
    with pytest.raises(TransportError, match="bar0..bar5"):
        open_pci("03:00.0/bar9")


def test_pci_missing_device_or_bar(tmp_path, monkeypatch):
    fake_pci(tmp_path, monkeypatch)
    with pytest.raises(DeviceNotFound, match="0000:04:00.0"):
        open_pci("04:00.0")
    with pytest.raises(DeviceNotFound, match="BAR 4"):
        open_pci("03:00.0/bar4")
