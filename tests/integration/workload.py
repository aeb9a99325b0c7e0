"""A seeded random OLTP workload on one composite-key table, for convergence tests.

Covers what CDC readers get wrong: several changes of one key in one transaction, multi-row
statements, primary-key updates (delete + insert in CDC), deletes, and rolled-back transactions
(which must never be captured). ``payload`` is binary: bytes that are not UTF-8, bytes that read
as hex digits and NULL (Snowflake loads Parquet binary as text unless told otherwise).
"""

from __future__ import annotations

import random
from typing import Any

ORDERS_DDL = (
    "CREATE TABLE dbo.orders (region char(2) NOT NULL, order_id int NOT NULL, status varchar(10) NOT NULL,"
    " amount decimal(18,2) NOT NULL, note nvarchar(max) NULL, updated_at datetime2(3) NOT NULL,"
    " payload varbinary(16) NULL, PRIMARY KEY (region, order_id))"
)
ENABLE_ORDERS = "EXEC sys.sp_cdc_enable_table @source_schema=N'dbo', @source_name=N'orders', @role_name=NULL"
ORDERS_TABLE = {"schema": "dbo", "table": "orders", "primary_key": ["region", "order_id"]}
REGIONS = ("EU", "US", "AP")
STATUSES = ("new", "paid", "shipped", "void")
PAYLOADS = (None, b"", b"\x00\xff\xfe", b"AB0c", "random")  # b"": an empty varbinary, sent as a bare 0x


class OrdersWorkload:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.next_id = 1
        self.clock = 0

    def _ts(self) -> str:
        self.clock += 1
        return f"2026-01-01T00:{self.clock // 60 % 60:02d}:{self.clock % 60:02d}.{self.clock % 1000:03d}"

    def _payload(self) -> bytearray | None:
        # bytearray: pymssql sends ``bytes`` that decode as text as a string literal ('AB0c'), which
        # SQL Server will not convert to varbinary implicitly; a bytearray always goes as 0x…
        choice = self.rng.choice(PAYLOADS)
        value = self.rng.randbytes(self.rng.randint(1, 16)) if choice == "random" else choice
        return None if value is None else bytearray(value)

    def _existing(self, conn: Any) -> list[tuple[str, int]]:
        cursor = conn.cursor()
        cursor.execute("SELECT region, order_id FROM dbo.orders")
        return list(cursor.fetchall())

    def statement(self, conn: Any) -> tuple[str, tuple[Any, ...]]:
        existing = self._existing(conn)
        roll = self.rng.random()
        if not existing or roll < 0.35:
            rows = self.rng.randint(1, 3)
            values, params = [], []
            for _ in range(rows):
                values.append("(%s, %s, %s, %s, %s, %s, %s)")
                note = self.rng.choice([None, "", "ünïcode ✓", "x" * self.rng.randint(1, 50)])
                params += [
                    self.rng.choice(REGIONS),
                    self.next_id,
                    "new",
                    f"{self.rng.randint(0, 99999)}.{self.rng.randint(0, 99):02d}",
                    note,
                    self._ts(),
                    self._payload(),
                ]
                self.next_id += 1
            return f"INSERT INTO dbo.orders VALUES {', '.join(values)}", tuple(params)
        region, order_id = self.rng.choice(existing)
        if roll < 0.70:
            return (
                "UPDATE dbo.orders SET status = %s, amount = amount + 1, updated_at = %s, payload = %s"
                " WHERE region = %s AND order_id = %s",
                (self.rng.choice(STATUSES), self._ts(), self._payload(), region, order_id),
            )
        if roll < 0.80:
            return "UPDATE dbo.orders SET note = %s, updated_at = %s WHERE region = %s", (
                f"bulk {self.clock}",
                self._ts(),
                self.rng.choice(REGIONS),
            )
        if roll < 0.90:
            return "DELETE FROM dbo.orders WHERE region = %s AND order_id = %s", (region, order_id)
        # Primary-key update: CDC records it as a delete followed by an insert.
        new_id, self.next_id = self.next_id, self.next_id + 1
        return "UPDATE dbo.orders SET order_id = %s WHERE region = %s AND order_id = %s", (new_id, region, order_id)

    def run(self, conn: Any, transactions: int, rollback_fraction: float = 0.1) -> int:
        """Run transactions; returns how many committed."""
        committed = 0
        cursor = conn.cursor()
        for _ in range(transactions):
            for _ in range(self.rng.randint(1, 4)):
                sql, params = self.statement(conn)
                cursor.execute(sql, params)
            if self.rng.random() < rollback_fraction:
                conn.rollback()
            else:
                conn.commit()
                committed += 1
        return committed
