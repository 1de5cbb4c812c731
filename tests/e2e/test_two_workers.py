"""Two ``ecrm worker`` processes on one machine (PostgreSQL + RabbitMQ): both stay up.

Celery names a worker ``celery@host`` unless told; two on one host took the same name
and RabbitMQ refused the second its control queue (``RESOURCE_LOCKED``), so it died at
start. Each worker now carries its process id in its name.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from conftest import Hub


def test_two_workers_on_one_host_both_run_and_share_the_work(
    hub_factory: Callable[..., Hub],
) -> None:
    hub = hub_factory("postgres+rabbitmq", ECRM_BATCH_SIZE="20")
    hub.launch(("serve",), ("scheduler",), ("worker",), ("worker",), ("worker", "--webhooks"))
    tag = uuid.uuid4().hex[:8]
    batch = [
        {"type": "track", "event": "Viewed", "userId": f"{tag}-{n % 40}", "messageId": f"{tag}-{n}"}
        for n in range(400)
    ]
    with hub.client() as client:
        answer = client.post("/v1/batch", json={"batch": batch})
        assert answer.status_code == 200, answer.text
    with hub.admin() as admin:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            last = admin.get(f"/v1/events/{tag}-399").json()
            if last.get("status") == "processed":
                break
            time.sleep(0.3)
        for n in (0, 199, 399):
            assert admin.get(f"/v1/events/{tag}-{n}").json()["status"] == "processed"
    time.sleep(3)  # a worker refused by the broker dies within a second or two of start
    hub.assert_alive()
