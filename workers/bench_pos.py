"""``ecrm bench pos-import``: POS file import rows/s beside the raw batched-insert ceiling.

Why measured this way: an import is judged against what the database could take with no
parsing, validation or logic at all, so the raw batched-insert rate of the same database
(``workers.bench.raw_insert_rate``: the same event rows, 500 per transaction) is measured
in the same run and the figure reported is the ratio. The file is generated in the
generic layout with realistic values (loyalty cards, emails, phones, anonymous sales,
refunds linked to earlier sales); ``--items`` > 1 makes line-item baskets of 1..N rows.
The import runs in a fresh process whose peak RSS is reported, to show that it streams
in constant memory (the raw insert, in this process, holds all its rows in memory).
"""

from __future__ import annotations

import csv
import multiprocessing
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.pos import import_pos_file, load_mapping
from pipeline import Database
from pipeline.schema import upgrade
from workers.bench import raw_insert_rate, scratch_postgres

HEADER = [
    "transaction_id",
    "store_id",
    "terminal_id",
    "cashier_id",
    "occurred_at",
    "kind",
    "currency",
    "subtotal",
    "tax",
    "discount",
    "total",
    "sku",
    "item_name",
    "category",
    "quantity",
    "unit_price",
    "loyalty_card",
    "email",
    "phone",
    "customer_id",
    "original_transaction_id",
    "properties.payment_method",
]
_PRODUCTS = [
    (f"SKU-{n:05d}", f"Product {n}", ("Grocery", "Home", "Beauty", "Garden", "Toys")[n % 5])
    for n in range(2000)
]


@dataclass(frozen=True)
class PosImportResult:
    """One backend's figures."""

    backend: str
    rows: int
    transactions: int
    imported: int
    seconds: float
    raw_insert_per_s: float
    peak_rss_mb: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def transactions_per_s(self) -> float:
        return self.transactions / self.seconds

    @property
    def ratio(self) -> float:
        return self.rows_per_s / self.raw_insert_per_s


def write_sample(path: Path, rows: int, *, items: int = 1, seed: int = 7) -> int:
    """Write ``rows`` CSV rows in the generic layout; returns how many transactions."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    written = transactions = 0
    sales: list[str] = []
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(HEADER)
        while written < rows:
            size = min(rng.randint(1, items), rows - written)
            number = transactions
            transactions += 1
            store = f"S{number % 40:03d}"
            refund = len(sales) > 10 and rng.random() < 0.03
            original = rng.choice(sales) if refund else ""
            if refund:
                store = original.partition("-")[0]  # refunded where it was sold
            elif len(sales) < 10_000:
                sales.append(f"{store}-{number:09d}")
            transaction_id = f"{store}-{number:09d}"
            customer = number % 50_000
            roll = rng.random()
            loyalty = f"LC{customer:08d}" if roll < 0.5 else ""
            email = f"Customer.{customer}@Example.com" if 0.5 <= roll < 0.65 else ""
            phone = f"+1 415 555 {customer % 10_000:04d}" if 0.65 <= roll < 0.75 else ""
            customer_id = f"C{customer:07d}" if 0.75 <= roll < 0.8 else ""
            lines = [rng.choice(_PRODUCTS) for _ in range(size)]
            quantities = [rng.randint(1, 3) for _ in range(size)]
            prices = [round(rng.uniform(0.5, 80), 2) for _ in range(size)]
            subtotal = round(sum(q * p for q, p in zip(quantities, prices, strict=True)), 2)
            tax = round(subtotal * 0.2, 2)
            at = (start + timedelta(seconds=number * 7)).isoformat()
            for position, (sku, name, category) in enumerate(lines):
                head = [
                    transaction_id,
                    store,
                    f"T{number % 6}",
                    f"E{number % 25:02d}",
                    at,
                    "refund" if refund else "sale",
                    "EUR",
                    f"{subtotal:.2f}",
                    f"{tax:.2f}",
                    "0.00",
                    f"{subtotal + tax:.2f}",
                ]
                if position:
                    head = [transaction_id] + [""] * 10
                out.writerow(
                    [
                        *head,
                        sku,
                        name,
                        category,
                        quantities[position],
                        f"{prices[position]:.2f}",
                        *(
                            [loyalty, email, phone, customer_id, original]
                            if not position
                            else [""] * 5
                        ),
                        rng.choice(("card", "cash", "mobile")) if not position else "",
                    ]
                )
            written += size
    return transactions


@contextmanager
def _database(backend: str, pg_admin_url: str) -> Iterator[str]:
    if backend == "postgres":
        with scratch_postgres(pg_admin_url) as url:
            yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="ecrm-bench-pos-db-"))
    try:
        yield f"sqlite:///{folder / 'hub.sqlite'}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _import_once(url: str, sample: str, state: str) -> tuple[float, int, int, float]:
    """Run in a fresh process: import ``sample``; (seconds, imported, rejected, peak MB)."""
    db = Database.connect(url)
    upgrade(db)
    started = time.perf_counter()
    summary = import_pos_file(
        db,
        Path(sample),
        mapping=load_mapping("generic"),
        workspace_id="default",
        default_region="US",
        state_dir=Path(state),
    )
    seconds = time.perf_counter() - started
    db.dispose()
    return seconds, summary.imported, summary.rejected, _peak_rss_mb()


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux's ``VmHWM`` first: ``ru_maxrss`` of a child started by fork + exec also counts
    the parent's memory at the fork (the kernel carries it over), which here would be the
    raw insert's rows, not the import's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_pos_import(
    backend: str, rows: int, pg_admin_url: str, *, items: int = 1
) -> PosImportResult:
    """Import a generated ``rows``-row CSV into a scratch database, then measure the ceiling.

    The import runs in a fresh process so that its peak RSS is its own (a process's peak
    never goes down, and the raw insert of an earlier backend holds every row in memory).
    """
    folder = Path(tempfile.mkdtemp(prefix="ecrm-bench-pos-"))
    spawn = multiprocessing.get_context("spawn")
    try:
        sample = folder / "sales.csv"
        transactions = write_sample(sample, rows, items=items)
        with (
            _database(backend, pg_admin_url) as url,
            ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child,
        ):
            job = child.submit(_import_once, url, str(sample), str(folder / "state"))
            seconds, imported, rejected, peak_mb = job.result()
        if rejected or imported != transactions:
            raise RuntimeError(
                f"benchmark import is wrong: {imported} of {transactions} imported, "
                f"{rejected} rejected"
            )
        with _database(backend, pg_admin_url) as url:
            raw = raw_insert_rate(url, rows)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return PosImportResult(backend, rows, transactions, imported, seconds, raw, peak_mb)


__all__ = ["PosImportResult", "bench_pos_import", "write_sample"]
