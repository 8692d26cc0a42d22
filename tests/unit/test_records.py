"""LayoutRecord: host mirrors pack exactly like the Amaranth Struct they mirror, and refuse to drift from it."""

from dataclasses import dataclass

import pytest
from amaranth.lib import data
from amaranth.lib import enum as amaranth_enum

from wirespeed.host.records import LayoutRecord


class Colour(amaranth_enum.Enum, shape=2):
    RED = 0
    BLUE = 3


class Layout(data.Struct):
    colour: Colour
    flag: 1
    pair: data.ArrayLayout(5, 2)
    count: 12


@dataclass(frozen=True)
class Record(LayoutRecord, layout=Layout):
    colour: Colour = Colour.RED
    flag: bool = False
    pair: tuple = (0, 0)
    count: int = 0


def test_packs_like_amaranth():
    r = Record(Colour.BLUE, True, (17, 3), 2049)
    expected = Layout.as_shape().const({"colour": Colour.BLUE, "flag": 1, "pair": [17, 3], "count": 2049})
    assert r.to_bits() == expected.as_bits()
    assert Record.from_bits(r.to_bits()) == r


@pytest.mark.parametrize("bad", [Record(count=1 << 12), Record(pair=(32, 0)), Record(pair=(1,))])
def test_values_that_do_not_fit_are_refused(bad):
    with pytest.raises(ValueError):
        bad.to_bits()


def test_field_names_must_match_the_layout():
    @dataclass(frozen=True)
    class Drifted(LayoutRecord, layout=Layout):
        colour: Colour = Colour.RED
        flag: bool = False
        count: int = 0          # "pair" is missing

    with pytest.raises(RuntimeError, match="pair"):
        Drifted().to_bits()
