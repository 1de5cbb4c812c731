"""The Celery app: queues by workload, explicit task names, acks late, no result backend.

Why these settings (each one answers a trap measured on this machine):

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a worker killed mid-task does not
  ack, so the broker can hand the message to another worker (early ack would lose it).
* ``worker_prefetch_multiplier=16``: a solo worker at prefetch 1 idles between messages.
* RabbitMQ ``confirm_publish``: without it a publish during a broker alarm vanishes.
* Redis ``visibility_timeout`` lowered to 10 minutes and the unacked restore sweep made
  frequent, so a lost worker's messages come back in minutes, not after an hour.
* No result backend: nobody reads task results; state lives in the database.

Whatever the broker does, the scheduler's relay sweep re-publishes any batch that is not
done by its due time, because the database is the truth.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu.entity import Queue

from pipeline import Settings
from pipeline.broker import embedded_connection_args

#: what ``ecrm worker`` consumes (a process pool: CPU and database work)
QUEUES = ("ingest", "deliver", "poll", "maintenance")
#: what ``ecrm worker --webhooks`` consumes (a thread pool: waiting on receivers)
WEBHOOK_QUEUE = "webhooks"
#: every queue the hub declares
ALL_QUEUES = (*QUEUES, WEBHOOK_QUEUE)
PROCESS_BATCH = "ecrm.pipeline.process_batch"
RELAY_OUTBOX = "ecrm.pipeline.relay_outbox"
DELIVER = "ecrm.connectors.deliver"
RELAY_ACTIONS = "ecrm.connectors.relay_actions"
LOYALTY_EXPIRE = "ecrm.loyalty.expire"
WEBHOOKS_DISPATCH = "ecrm.webhooks.dispatch"
WEBHOOKS_PRUNE = "ecrm.webhooks.prune"
WEBHOOKS_DELIVER = "ecrm.webhooks.deliver_endpoint"
#: how often the scheduler expires loyalty points that reached their date
LOYALTY_EXPIRE_SECONDS = 3600.0
#: how often the delivery log and the change feed are pruned (``ECRM_WEBHOOK_RETENTION_DAYS``)
WEBHOOKS_PRUNE_SECONDS = 3600.0

app = Celery("ecrm", set_as_current=False)


def transport_options(broker_url: str) -> dict[str, Any]:
    """Per-broker options (see the module docstring)."""
    if broker_url.startswith(("amqp", "pyamqp")):
        return {"confirm_publish": True}
    if broker_url.startswith("redis"):
        return {
            "visibility_timeout": 600,
            "unacked_restore_interval": 30,
            "unacked_restore_throttle": 0,
        }
    return {}


def configure(settings: Settings) -> Celery:
    """Point the app at the settings' broker; call once per process before use."""
    broker_url, transport = embedded_connection_args(settings.broker_url)
    app.conf.update(
        broker_url=broker_url,
        broker_transport=transport,
        broker_transport_options=transport_options(broker_url),
        broker_connection_retry_on_startup=True,
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=16,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_queues=[Queue(name) for name in ALL_QUEUES],
        task_default_queue="ingest",
        task_routes={
            PROCESS_BATCH: {"queue": "ingest"},
            RELAY_OUTBOX: {"queue": "maintenance"},
            DELIVER: {"queue": "deliver"},
            RELAY_ACTIONS: {"queue": "maintenance"},
            LOYALTY_EXPIRE: {"queue": "maintenance"},
            WEBHOOKS_DISPATCH: {"queue": "maintenance"},
            WEBHOOKS_PRUNE: {"queue": "maintenance"},
            WEBHOOKS_DELIVER: {"queue": WEBHOOK_QUEUE},
        },
        beat_schedule={
            "relay-outbox": {
                "task": RELAY_OUTBOX,
                "schedule": settings.relay_interval_seconds,
                "options": {"expires": max(settings.relay_interval_seconds * 5, 10)},
            },
            "relay-actions": {
                "task": RELAY_ACTIONS,
                "schedule": settings.relay_interval_seconds,
                "options": {"expires": max(settings.relay_interval_seconds * 5, 10)},
            },
            "webhooks-dispatch": {
                "task": WEBHOOKS_DISPATCH,
                "schedule": settings.relay_interval_seconds,
                "options": {"expires": max(settings.relay_interval_seconds * 5, 10)},
            },
            "webhooks-prune": {
                "task": WEBHOOKS_PRUNE,
                "schedule": WEBHOOKS_PRUNE_SECONDS,
                "options": {"expires": WEBHOOKS_PRUNE_SECONDS},
            },
            "loyalty-expire": {
                "task": LOYALTY_EXPIRE,
                "schedule": LOYALTY_EXPIRE_SECONDS,
                "options": {"expires": LOYALTY_EXPIRE_SECONDS},
            },
        },
        beat_schedule_filename=str(settings.home / "beat-schedule"),
        timezone="UTC",
    )
    return app


@worker_process_init.connect
def _drop_parent_runtime(**_: Any) -> None:
    """A forked pool process must open its own database connections."""
    from workers.runtime import get_runtime, set_runtime

    runtime = get_runtime()
    set_runtime(None)
    runtime.db.engine.dispose(close=False)


# Registers the tasks on ``app``.
from workers import loyalty_tasks as _loyalty_tasks  # noqa: E402,F401
from workers import tasks as _tasks  # noqa: E402,F401
from workers import webhook_tasks as _webhook_tasks  # noqa: E402,F401
