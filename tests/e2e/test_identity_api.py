"""Identity over HTTP on a running hub: a merge explained, a refused join, an explicit link."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from conftest import Hub, basic_auth
from test_slice import wait_processed


def test_merge_explain_conflicts_and_links(hub_factory: Callable[..., Hub], tmp_path: Path) -> None:
    config = tmp_path / "identity.yaml"
    config.write_text("limits: {user_id: 1}\nblocked: {email: ['desk@shop\\.example']}\n")
    hub = hub_factory("sqlite", ECRM_IDENTITY_CONFIG=str(config))
    hub.launch(("run",))
    client, admin = hub.client(), hub.admin()
    t = uuid.uuid4().hex[:8]
    anon, user, other = f"anon-{t}", f"u-{t}", f"v-{t}"
    batch = [
        {"type": "page", "anonymousId": anon, "messageId": f"p-{t}", "name": "Home"},
        {
            "type": "identify",
            "userId": user,
            "messageId": f"i-{t}",
            "traits": {"email": f"a-{t}@x.io"},
        },
        # the anonymous visitor logs in: the two profiles become one
        {
            "type": "track",
            "userId": user,
            "anonymousId": anon,
            "messageId": f"t-{t}",
            "event": "Signed In",
        },
        # a second user id with the same email: another person (a shared inbox), recorded
        {
            "type": "identify",
            "userId": other,
            "messageId": f"o-{t}",
            "traits": {"email": f"a-{t}@x.io"},
        },
        # the front desk's address identifies nobody
        {
            "type": "identify",
            "userId": f"w-{t}",
            "messageId": f"w-{t}",
            "traits": {"email": "desk@shop.example"},
        },
    ]
    answer = client.post(
        "/v1/batch", json={"batch": batch}, headers={"Authorization": basic_auth()}
    )
    assert answer.status_code == 200, answer.text
    views = wait_processed(admin, [m["messageId"] for m in batch], hub)
    profile = views[f"p-{t}"]["profile_id"]
    assert views[f"t-{t}"]["profile_id"] == profile == views[f"i-{t}"]["profile_id"]

    explained = admin.get(f"/v1/profiles/{profile}/explain").json()
    assert explained["profile_id"] == profile and explained["merges"] == 1
    assert f"user_id:{user}" in explained["text"] and f"anonymous_id:{anon}" in explained["text"]
    assert {e["message_id"] for e in explained["events"]} >= {f"p-{t}", f"i-{t}", f"t-{t}"}

    conflicts = admin.get("/v1/identity/conflicts", params={"profile_id": profile}).json()
    [refused] = [c for c in conflicts["conflicts"] if c["event"] == f"o-{t}"]
    assert (refused["reason"], refused["kind"]) == ("distinct_person", "user_id")
    assert refused["detail"]["identifiers"] == [f"user_id:{other}", f"email:a-{t}@x.io"]
    assert refused["current_profile_ids"][1] == profile
    assert views[f"o-{t}"]["profile_id"] == refused["current_profile_ids"][0] != profile
    assert admin.get("/v1/profiles?identifier=email:desk@shop.example").status_code == 404

    # an operator links the second user id's own profile to a loyalty card
    lone = client.post(
        "/v1/track",
        json={"userId": other, "event": "Viewed", "messageId": f"v-{t}"},
        headers={"Authorization": basic_auth()},
    )
    assert lone.status_code == 200
    lone_profile = wait_processed(admin, [f"v-{t}"], hub)[f"v-{t}"]["profile_id"]
    link = {"identifiers": {"user_id": other, "loyalty_card": f"LC-{t}"}, "idempotency_key": t}
    linked = admin.post("/v1/identity/links", json=link)
    assert linked.status_code == 202, linked.text
    assert linked.json() == {"message_id": f"link:{t}", "status": "accepted"}
    assert admin.post("/v1/identity/links", json=link).json()["status"] == "duplicate"
    assert wait_processed(admin, [f"link:{t}"], hub)[f"link:{t}"]["profile_id"] == lone_profile
    card = admin.get("/v1/profiles", params={"identifier": f"loyalty_card:LC-{t}"}).json()
    assert card["id"] == lone_profile

    bad = admin.post("/v1/identity/links", json={"identifiers": {"user_id": other}})
    assert bad.status_code == 400 and bad.json()["field"] == "identifiers"
    assert admin.get("/v1/profiles/prof_nobody/explain").status_code == 404
    assert client.get(f"/v1/profiles/{profile}/explain").status_code == 401

    shown = hub.cli("identity", "explain", profile)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == profile and f"anonymous_id:{anon}" in shown.stdout
    listed = hub.cli("identity", "conflicts", "--profile", profile)
    assert listed.returncode == 0 and f"user_id:{other} + email:a-{t}@x.io" in listed.stdout
    missing = hub.cli("identity", "explain", "prof_nobody")
    assert missing.returncode == 2 and "no profile 'prof_nobody'" in missing.stderr

    # the anonymous id was a shared kiosk's: an operator splits it off again
    split = admin.post(
        f"/v1/profiles/{profile}/unmerge",
        json={"identifier": f"anonymous_id:{anon}", "reason": "kiosk", "by": "ops"},
    )
    assert split.status_code == 200, split.text
    assert split.json()["events"] == 3 and len(split.json()["split_off"]) == 1
    assert split.json()["loyalty"] == {"moved": [], "short": []}
    kept = admin.get(f"/v1/profiles/{profile}").json()
    assert {f"{i['kind']}:{i['value']}" for i in kept["identifiers"]} == {
        f"user_id:{user}",
        f"email:a-{t}@x.io",
    }
    kiosk = admin.get("/v1/profiles", params={"identifier": f"anonymous_id:{anon}"}).json()
    assert kiosk["id"] == split.json()["split_off"][0] != profile
    for body, status, field in (
        ({}, 400, "identifier"),
        ({"identifier": "anonymous_id"}, 400, "identifier"),
        ({"identifier": f"anonymous_id:{anon}"}, 422, "identifier"),  # no longer held
        ({"source": "nowhere"}, 422, "source"),
    ):
        refused_split = admin.post(f"/v1/profiles/{profile}/unmerge", json=body)
        assert (refused_split.status_code, refused_split.json()["field"]) == (status, field)
    gone = admin.post("/v1/profiles/prof_nobody/unmerge", json={"source": "x"})
    assert gone.status_code == 404
    cli_split = hub.cli("identity", "unmerge", profile, "--identifier", "user_id")
    assert cli_split.returncode == 2 and "use KIND:VALUE" in cli_split.stderr


def test_shared_identifiers_are_listed_and_operators_decide(
    hub_factory: Callable[..., Hub],
) -> None:
    hub = hub_factory("sqlite")
    hub.launch(("run",))
    client, admin = hub.client(), hub.admin()
    t = uuid.uuid4().hex[:8]
    family = f"family-{t}@x.io"
    batch = [
        {
            "type": "identify",
            "userId": f"{who}-{t}",
            "messageId": f"{who}-{t}",
            "traits": {"email": family},
        }
        for who in ("ann", "bob", "cat")
    ]
    for message in batch:  # one request each: three people in turn
        answer = client.post(
            "/v1/batch", json={"batch": [message]}, headers={"Authorization": basic_auth()}
        )
        assert answer.status_code == 200
        wait_processed(admin, [message["messageId"]], hub)
    [shared] = admin.get("/v1/identity/shared").json()["shared"]
    assert (shared["identifier"], shared["status"], shared["people"]) == (
        f"email:{family}",
        "shared",
        3,
    )

    allowed = admin.put(f"/v1/identity/shared/email:{family.upper()}", json={"shared": False})
    assert allowed.status_code == 200, allowed.text
    assert allowed.json() == {"identifier": f"email:{family}", "status": "allowed"}
    listed = hub.cli("identity", "shared")
    assert listed.returncode == 0 and f"email:{family}  allowed" in listed.stdout
    flagged = hub.cli("identity", "shared", "--flag", f"email:{family}")
    assert flagged.returncode == 0 and "shared" in flagged.stdout
    assert (
        admin.put("/v1/identity/shared/email:nobody@x.io", json={"shared": True}).status_code == 404
    )
    bad = admin.put(f"/v1/identity/shared/email:{family}", json={"shared": "yes"})
    assert bad.status_code == 400 and bad.json()["field"] == "shared"


def test_probable_matches_from_segment_traits_merge_or_wait_for_review(
    hub_factory: Callable[..., Hub],
) -> None:
    hub = hub_factory("sqlite")
    hub.launch(("run",))
    client, admin = hub.client(), hub.admin()
    t = uuid.uuid4().hex[:8]
    postcode = str(int(t, 16) % 9000 + 1000)
    # no digit in common, so four edits apart: a fixed "0999" was one edit from some random
    # postcodes, and each digit shifted by 5 could be two transpositions away (7283, 2738)
    unused = [digit for digit in "9876543210" if digit not in postcode]
    elsewhere = "".join(unused[position % len(unused)] for position in range(len(postcode)))
    address = {"street": "Wattle Grove", "city": "Ashfield", "postalCode": postcode, "state": "NSW"}
    ada = {
        "firstName": "Adelaide",
        "lastName": f"Kov{t}",
        "birthday": "1990-02-11",
        "streetNumber": "4",
    }
    messages = [
        {
            "type": "identify",
            "anonymousId": f"a1-{t}",
            "messageId": f"m1-{t}",
            "traits": {**ada, "address": address, "street_number": "4"},
        },
        # the same person on the phone a week later, name misspelt by the agent
        {
            "type": "identify",
            "anonymousId": f"a2-{t}",
            "messageId": f"m2-{t}",
            "traits": {**ada, "firstName": "Adelaid", "address": address, "street_number": "4"},
        },
        # same name, another postcode and street, no birth date: a person must decide
        {
            "type": "identify",
            "anonymousId": f"a3-{t}",
            "messageId": f"m3-{t}",
            "traits": {
                "firstName": "Adelaide",
                "lastName": f"Kov{t}",
                "address": {**address, "street": "Banksia Road", "postalCode": elsewhere},
            },
        },
    ]
    for message in messages:
        answer = client.post(
            "/v1/batch", json={"batch": [message]}, headers={"Authorization": basic_auth()}
        )
        assert answer.status_code == 200
        wait_processed(admin, [message["messageId"]], hub)
    views = wait_processed(admin, [m["messageId"] for m in messages], hub)
    first, second, third = (views[f"m{i}-{t}"]["profile_id"] for i in (1, 2, 3))
    assert first == second != third
    explained = admin.get(f"/v1/profiles/{first}/explain").json()
    assert "matched with probability" in explained["text"]

    pending = admin.get("/v1/identity/reviews").json()["reviews"]
    [review] = [r for r in pending if set(r["current_profile_ids"]) == {first, third}]
    decided = admin.post(f"/v1/identity/reviews/{review['id']}", json={"decision": "accept"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "accepted" and decided.json()["link_message_id"]
    link = decided.json()["link_message_id"]
    assert wait_processed(admin, [link], hub)[link]["profile_id"] == first
    assert admin.get(f"/v1/profiles/{third}").json()["merged_into"] == first
    again = admin.post(f"/v1/identity/reviews/{review['id']}", json={"decision": "reject"})
    assert again.status_code == 409 and again.json()["field"] == "decision"
    assert admin.post("/v1/identity/reviews/999999", json={"decision": "accept"}).status_code == 404
    listed = hub.cli("identity", "reviews", "--status", "accepted")
    assert listed.returncode == 0 and str(review["id"]) in listed.stdout
