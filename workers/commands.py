"""``ecrm bench``: benchmarks, each beside its reference (loaded only when run)."""

from __future__ import annotations

import os

import click

BROKERS = {
    "postgres+rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
    "postgres+redis": "redis://127.0.0.1:6379/14",
}


#: Options the bench commands share.
_pg_admin_url = click.option(
    "--pg-admin-url",
    default=lambda: os.environ.get(
        "ECRM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    help="Where scratch PostgreSQL databases are created (and dropped).",
)
_database_backends = click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(["sqlite", "postgres"]),
    default=["sqlite"],
    show_default=True,
)


@click.group()
def bench() -> None:
    """Benchmarks, each beside its reference measured in the same run."""


@bench.command("pos-import")
@click.option("--rows", default=1_000_000, show_default=True, help="CSV rows to generate.")
@click.option(
    "--items",
    default=4,
    show_default=True,
    help="Line items per basket, 1..N (one row each); 1 = a transaction per row.",
)
@_database_backends
@_pg_admin_url
def bench_pos_import_command(
    rows: int, items: int, backends: tuple[str, ...], pg_admin_url: str
) -> None:
    """POS CSV import rows/s beside the raw batched-insert ceiling, and peak memory."""
    from workers.bench_pos import bench_pos_import

    click.echo(
        f"{'backend':10} {'rows':>9} {'trans.':>9} {'import rows/s':>13} {'trans./s':>9} "
        f"{'raw insert rows/s':>17} {'import/raw':>10} {'peak RSS MB':>11}"
    )
    for backend in backends:
        result = bench_pos_import(backend, rows, pg_admin_url, items=items)
        click.echo(
            f"{backend:10} {result.rows:9d} {result.transactions:9d} "
            f"{result.rows_per_s:13.0f} {result.transactions_per_s:9.0f} "
            f"{result.raw_insert_per_s:17.0f} {result.ratio:10.1%} {result.peak_rss_mb:11.0f}"
        )


@bench.command("http")
@click.option("--seconds", default=10, show_default=True, help="Load duration per target.")
@click.option("--connections", default=8, show_default=True, help="wrk connections.")
@click.option("--per-request", default=100, show_default=True, help="Events per /v1/batch.")
@click.option(
    "--ingest-mode",
    "modes",
    multiple=True,
    type=click.Choice(["validate", "spool"]),
    default=["validate"],
    show_default=True,
    help="The hub's ECRM_INGEST_MODE (repeat for both: each beside its own parse-only run).",
)
@_database_backends
@_pg_admin_url
def bench_http_command(
    seconds: int,
    connections: int,
    per_request: int,
    modes: tuple[str, ...],
    backends: tuple[str, ...],
    pg_admin_url: str,
) -> None:
    """HTTP ingest via /v1/batch (wrk) beside a parse-only uvicorn app, same load."""
    from workers.bench_http import bench_http

    click.echo(
        f"{'backend':10} {'mode':8} {'events/req':>10} {'hub req/s':>10} {'hub ev/s':>10} "
        f"{'parse-only req/s':>16} {'parse-only ev/s':>15} {'hub/parse-only':>14}"
    )
    for backend in backends:
        for mode in modes:
            try:
                result = bench_http(
                    backend,
                    seconds=seconds,
                    connections=connections,
                    per_request=per_request,
                    pg_admin_url=pg_admin_url,
                    ingest_mode=mode,
                )
            except RuntimeError as exc:
                raise click.ClickException(str(exc)) from None
            click.echo(
                f"{backend:10} {mode:8} {per_request:10d} {result.hub_requests_per_s:10.0f} "
                f"{result.hub_events_per_s:10.0f} {result.parse_only_requests_per_s:16.0f} "
                f"{result.parse_only_events_per_s:15.0f} {result.ratio:14.1%}"
            )


@bench.command("ingest")
@click.option("--events", default=20_000, show_default=True, help="Events to send.")
@click.option("--clients", default=4, show_default=True, help="Concurrent HTTP clients.")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(["sqlite", *BROKERS]),
    default=["sqlite", "postgres+rabbitmq"],
    show_default=True,
)
@_pg_admin_url
@click.option(
    "--worker-concurrency",
    type=int,
    default=None,
    help="Worker processes (ECRM_WORKER_CONCURRENCY) of the hub under test "
    "[default: the hub's, one per core up to 4].",
)
@click.option(
    "--ingest-mode",
    type=click.Choice(["validate", "spool"]),
    default="validate",
    show_default=True,
    help="The hub's ECRM_INGEST_MODE (the backend is shown as BACKEND+spool).",
)
def bench_ingest(
    events: int,
    clients: int,
    backends: tuple[str, ...],
    pg_admin_url: str,
    worker_concurrency: int | None,
    ingest_mode: str,
) -> None:
    """HTTP batch -> processed profiles, events/s, beside the raw batched-insert ceiling."""
    from workers.bench import bench_backend

    click.echo(
        f"{'backend':20} {'events':>7} {'e2e ev/s':>9} {'ingest ev/s':>11} "
        f"{'raw insert ev/s':>15} {'e2e/raw':>8} {'api cpu µs/ev':>13} {'worker cpu µs/ev':>16}"
    )
    for backend in backends:
        result = bench_backend(
            backend,
            events,
            clients,
            pg_admin_url,
            BROKERS.get(backend),
            worker_concurrency,
            ingest_mode,
        )
        label = backend if ingest_mode == "validate" else f"{backend}+{ingest_mode}"
        click.echo(
            f"{label:20} {result.events:7d} {result.end_to_end_per_s:9.0f} "
            f"{result.ingest_per_s:11.0f} {result.raw_insert_per_s:15.0f} {result.ratio:8.1%} "
            f"{result.api_cpu_us:13.0f} {result.worker_cpu_us:16.0f}"
        )
