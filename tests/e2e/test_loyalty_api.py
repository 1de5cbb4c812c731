"""Loyalty on a running hub: points and tier over HTTP (the profile's JSON too), reward
redemptions refused with 409 naming the field, merged ids, and the ``ecrm loyalty`` CLI."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from conftest import Hub, basic_auth
from test_slice import wait_processed

PROGRAMME = """
expiry_months: 12
tiers: [{name: silver, threshold: 500}, {name: gold, threshold: 2000}]
rewards:
  - {id: coffee, name: Free coffee, points: 150}
  - {id: voucher, name: 10 EUR voucher, points: 1000}
"""


def test_loyalty_over_http_and_the_cli(hub_factory: Callable[..., Hub], tmp_path: Path) -> None:
    config = tmp_path / "loyalty.yaml"
    config.write_text(PROGRAMME)
    hub = hub_factory("sqlite", ECRM_LOYALTY_CONFIG=str(config))
    hub.launch(("run",))
    client, admin = hub.client(), hub.admin()
    t = uuid.uuid4().hex[:8]
    batch = [
        {"type": "page", "anonymousId": f"a-{t}", "messageId": f"p-{t}", "name": "Home"},
        {"type": "identify", "userId": f"u-{t}", "messageId": f"i-{t}"},
    ]
    answer = client.post(
        "/v1/batch", json={"batch": batch}, headers={"Authorization": basic_auth()}
    )
    assert answer.status_code == 200, answer.text
    views = wait_processed(admin, [f"p-{t}", f"i-{t}"], hub)
    anon, member = views[f"p-{t}"]["profile_id"], views[f"i-{t}"]["profile_id"]

    fresh = admin.get(f"/v1/profiles/{member}").json()
    assert fresh["loyalty"] == {"balance": 0, "tier": None}
    earn = {"points": 600, "reason": "welcome", "idempotency_key": f"welcome-{t}"}
    first = admin.post(f"/v1/profiles/{member}/loyalty/entries", json=earn)
    assert first.status_code == 201, first.text
    assert first.json()["balance"] == 600 and first.json()["tier"] == "silver"
    again = admin.post(f"/v1/profiles/{member}/loyalty/entries", json=earn)
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["entry"]["id"] == first.json()["entry"]["id"]
    assert (
        admin.post(
            f"/v1/profiles/{anon}/loyalty/entries", json={"points": 50, "reason": "browsing"}
        ).status_code
        == 201
    )

    coffee = admin.post(f"/v1/profiles/{member}/loyalty/redemptions", json={"reward": "coffee"})
    assert coffee.status_code == 201 and coffee.json()["balance"] == 450
    refused = admin.post(f"/v1/profiles/{member}/loyalty/redemptions", json={"reward": "voucher"})
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert (problem["field"], problem["balance"], problem["needed"]) == ("reward", 450, 1000)
    assert "the balance is 450" in problem["detail"]
    for path, body, status, field in (
        ("redemptions", {"reward": "yacht"}, 422, "reward"),
        ("redemptions", {}, 400, "reward"),
        ("entries", {"points": 10}, 400, "reason"),
        ("entries", {"points": 0, "reason": "x"}, 400, "points"),
        ("entries", {"kind": "redeem", "points": 9999, "reason": "x"}, 409, "points"),
        ("entries", {"kind": "steal", "points": 1, "reason": "x"}, 400, "kind"),
    ):
        bad = admin.post(f"/v1/profiles/{member}/loyalty/{path}", json=body)
        assert (bad.status_code, bad.json().get("field")) == (status, field), (body, bad.text)
    assert admin.get("/v1/profiles/prof_nobody/loyalty").status_code == 404
    assert client.get(f"/v1/profiles/{member}/loyalty").status_code == 401

    shown = admin.get(f"/v1/profiles/{member}/loyalty", params={"limit": 1}).json()
    assert (shown["balance"], shown["tier"]) == (450, "silver")
    assert [e["kind"] for e in shown["entries"]] == ["redeem"] and shown["next_before"]
    rest = admin.get(
        f"/v1/profiles/{member}/loyalty", params={"before": shown["next_before"]}
    ).json()
    assert [e["kind"] for e in rest["entries"]] == ["earn"]
    assert shown["next_tier"] == {"name": "gold", "needs": 1400}
    assert [(r["id"], r["available"]) for r in shown["rewards"]] == [
        ("coffee", True),
        ("voucher", False),
    ]

    # the visitor logs in: the two profiles become one, and so do their points
    login = {
        "userId": f"u-{t}",
        "anonymousId": f"a-{t}",
        "event": "Signed In",
        "messageId": f"t-{t}",
    }
    assert client.post("/v1/track", json=login, headers={"Authorization": basic_auth()}).is_success
    survivor = wait_processed(admin, [f"t-{t}"], hub)[f"t-{t}"]["profile_id"]
    gone = anon if survivor == member else member
    merged = admin.get(f"/v1/profiles/{gone}/loyalty").json()
    assert (merged["profile_id"], merged["requested_id"], merged["balance"]) == (
        survivor,
        gone,
        500,
    )
    assert admin.get(f"/v1/profiles/{gone}").json()["loyalty"]["balance"] == 500
    found = admin.get("/v1/profiles", params={"identifier": f"user_id:u-{t}"}).json()
    assert found["loyalty"]["balance"] == 500  # the tier follows at the next ledger change

    awarded = hub.cli("loyalty", "award", survivor, "1600", "--reason", "anniversary", "--key", t)
    assert awarded.returncode == 0, awarded.stderr
    assert awarded.stdout.strip() == "+1600 points; balance 2100, tier gold"
    replayed = hub.cli("loyalty", "award", survivor, "1600", "--reason", "anniversary", "--key", t)
    assert "already done" in replayed.stdout and "balance 2100" in replayed.stdout
    redeemed = hub.cli("loyalty", "redeem", gone, "voucher")
    assert redeemed.returncode == 0 and "balance 1100" in redeemed.stdout, redeemed.stderr
    balance = hub.cli("loyalty", "balance", survivor)
    assert balance.returncode == 0 and f"{survivor}  1100 points  tier gold" in balance.stdout
    assert "reward: 10 EUR voucher" in balance.stdout
    short = hub.cli("loyalty", "redeem", survivor, "voucher")
    short2 = hub.cli("loyalty", "redeem", survivor, "voucher")
    assert short.returncode == 0 and short2.returncode == 2
    assert short2.stderr.strip() == "ecrm: insufficient points: the balance is 100, 1000 needed"
    assert len(short2.stderr.strip().splitlines()) == 1
    unknown = hub.cli("loyalty", "redeem", survivor, "yacht")
    assert unknown.returncode == 2 and "reward: no reward 'yacht'" in unknown.stderr
    missing = hub.cli("loyalty", "balance", "prof_nobody")
    assert missing.returncode == 2 and "no profile 'prof_nobody'" in missing.stderr
    expired = hub.cli("loyalty", "expire")
    assert expired.returncode == 0 and expired.stdout.startswith("expired 0 points")
