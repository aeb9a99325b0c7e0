"""LSN helpers and the ``Lsn`` value type (pure functions)."""

from __future__ import annotations

import pytest

from include.cdc_pipeline import lsn
from include.cdc_pipeline.lsn import Lsn


def test_lsn_hex_order_equals_byte_order() -> None:
    values = [bytes([0] * 9 + [1]), bytes([0] * 8 + [1, 0]), bytes([0x2A] + [0] * 9), bytes([0xFF] * 10)]
    assert sorted(values) == sorted(values, key=lambda v: lsn.to_hex(v))
    assert lsn.to_hex(values[0]) == "00000000000000000001"
    assert lsn.from_hex("0x" + lsn.to_hex(values[2])) == values[2]


def test_lsn_increment_and_decrement_carry() -> None:
    value = bytes([0] * 8 + [0, 0xFF])
    assert lsn.increment(value) == bytes([0] * 8 + [1, 0])
    assert lsn.decrement(lsn.increment(value)) == value
    with pytest.raises(ValueError):
        lsn.decrement(lsn.ZERO_LSN)
    with pytest.raises(ValueError):
        lsn.to_hex(b"\x00" * 9)


def test_lsn_orders_as_sql_server_does() -> None:
    # Given LSNs whose first differing byte is not their last (unsigned, big-endian)
    raw = [bytes([0] * 9 + [0xFF]), bytes([0] * 8 + [1, 0]), bytes([0x80] + [0] * 9), bytes(10)]
    values = [Lsn.from_bytes(v) for v in raw]
    # Then Lsn order is byte order is numeric order, and the stored hex sorts the same way
    assert [v.raw for v in sorted(values)] == sorted(raw)
    assert sorted(values) == sorted(values, key=int)
    assert sorted(values) == sorted(values, key=lambda v: v.hex)
    assert max(values) == Lsn.from_hex("0x80000000000000000000")


def test_lsn_forms_round_trip() -> None:
    value = Lsn.from_hex("0000002a000001f40003")
    assert value.hex == "0000002A000001F40003"  # the stored form: 20 upper-case hex characters
    assert str(value) == "0x0000002A000001F40003"  # SQL Server's display form
    assert bytes(value) == bytes.fromhex("0000002A000001F40003")  # the driver parameter
    assert Lsn.from_hex(str(value)) == value == Lsn.from_bytes(bytearray(bytes(value)))
    assert lsn.to_hex(value) == lsn.to_hex(bytes(value)) == value.hex
    assert lsn.display(value) == lsn.display(bytes(value)) == str(value)


def test_lsn_next_and_prev_carry_and_stop_at_zero() -> None:
    value = Lsn.from_hex("000000000000000000FF")
    assert value.next() == Lsn.from_hex("00000000000000000100")
    assert value.next().prev() == value
    assert Lsn.ZERO.next() == Lsn.from_int(1)
    with pytest.raises(ValueError, match="no predecessor"):
        Lsn.ZERO.prev()


@pytest.mark.parametrize("text", ["00", "0x" + "00" * 11, ""])
def test_lsn_is_ten_bytes(text: str) -> None:
    with pytest.raises(ValueError, match="an LSN is 10 bytes"):
        Lsn.from_hex(text)
