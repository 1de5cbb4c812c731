"""Rules over HTTP and the CLI on a running hub: PUT/GET /v1/rules, vocabulary, ecrm rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from conftest import Hub

SAMPLE = Path(__file__).parents[2] / "personalization" / "rules" / "samples" / "demo.yaml"

YAML_RULES = """\
rules:
  - id: big-order
    name: Tag big orders
    trigger: {types: [order.completed]}
    conditions:
      all:
        - {field: event.properties.total, op: gte, value: 500}
    actions: [{type: add_tag, tag: big-spender}]
"""


def test_rules_api_validates_versions_and_exports_the_vocabulary(
    hub_factory: Callable[..., Hub],
) -> None:
    hub = hub_factory("sqlite")
    hub.launch(("serve",))
    admin = hub.admin()

    assert httpx.get(f"{hub.base_url}/v1/rules").status_code == 401
    vocabulary = admin.get("/v1/rules/vocabulary").json()
    assert {"eq", "between", "matches_glob", "exists"} <= {
        o["name"] for o in vocabulary["operators"]
    }
    assert "award_points" in {a["type"] for a in vocabulary["actions"]}
    assert "history.count" in {h["name"] for h in vocabulary["history"]}
    assert admin.get("/v1/rules").json() == {"rules": []}

    # YAML, as in a rule file
    put = admin.put("/v1/rules", content=YAML_RULES, headers={"Content-Type": "application/yaml"})
    assert put.status_code == 200, put.text
    assert put.json()["created"] == {"big-order": 1}

    # JSON: a changed rule and a new one; a rule left out would be disabled
    changed = {
        "rules": [
            {
                "id": "big-order",
                "name": "Tag big orders",
                "priority": 300,
                "trigger": {"types": ["order.*"]},
                "actions": [{"type": "add_tag", "tag": "big-spender"}],
            },
            {
                "id": "welcome",
                "name": "Welcome",
                "trigger": {"types": ["profile.identified"]},
                "actions": [{"type": "send_email", "subject": "Hi", "text": "Welcome!"}],
            },
        ]
    }
    put = admin.put("/v1/rules", json=changed)
    assert put.status_code == 200, put.text
    assert (put.json()["updated"], put.json()["created"]) == ({"big-order": 2}, {"welcome": 1})
    listed = admin.get("/v1/rules").json()["rules"]
    assert [(r["id"], r["version"]) for r in listed] == [("big-order", 2), ("welcome", 1)]
    one = admin.get("/v1/rules/big-order").json()
    assert [v["version"] for v in one["versions"]] == [2, 1]
    assert one["versions"][1]["definition"]["trigger"]["types"] == ["order.completed"]
    missing = admin.get("/v1/rules/nope")
    assert missing.status_code == 404 and missing.json()["field"] == "rule_id"

    # invalid YAML: 422 naming the field and the line; nothing changes
    bad = YAML_RULES.replace("op: gte", "op: bigger")
    answer = admin.put("/v1/rules", content=bad, headers={"Content-Type": "application/yaml"})
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["field"] == "rules[0].conditions.all[0].op"
    assert "(line 7)" in problem["detail"]
    assert problem["errors"][0]["line"] == 7
    # invalid JSON rules: the path, no line
    changed["rules"][1]["trigger"] = {"types": ["Profile Identified"]}
    answer = admin.put("/v1/rules", json=changed)
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {
            "field": "rules[1].trigger.types[0]",
            "line": None,
            "message": answer.json()["errors"][0]["message"],
        }
    ]
    assert (
        admin.put(
            "/v1/rules", content=b"{", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert [(r["id"], r["version"]) for r in admin.get("/v1/rules").json()["rules"]] == [
        ("big-order", 2),
        ("welcome", 1),
    ]

    # a rehearsal of rules not applied: nothing written, the same body as PUT
    rehearsed = admin.post(
        "/v1/rules/test?since=7d&sample=1",
        content=YAML_RULES,
        headers={"Content-Type": "application/yaml"},
    )
    assert rehearsed.status_code == 200, rehearsed.text
    report = rehearsed.json()
    assert (report["events"], report["written"]) == (0, False)
    assert [r["rule_id"] for r in report["rules"]] == ["big-order"]
    wrong = admin.post("/v1/rules/test?since=soon", json={"rules": []})
    assert wrong.status_code == 422 and wrong.json()["field"] == "since"
    assert (
        admin.post(
            "/v1/rules/test", content=bad, headers={"Content-Type": "application/yaml"}
        ).status_code
        == 422
    )
    assert [r["version"] for r in admin.get("/v1/rules").json()["rules"]] == [2, 1]


def test_ecrm_rules_validate_apply_and_list(
    hub_factory: Callable[..., Hub], tmp_path: Path
) -> None:
    hub = hub_factory("sqlite")
    valid = hub.cli("rules", "validate", str(SAMPLE))
    assert valid.returncode == 0, valid.stderr
    assert f"{SAMPLE}: 5 rules valid (5 enabled)" in valid.stdout

    missing = hub.cli("rules", "validate", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"ecrm: {tmp_path / 'none.yaml'}: no such file"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(YAML_RULES.replace("value: 500", "value: lots").replace("add_tag", "add_tags"))
    invalid = hub.cli("rules", "validate", str(bad))
    assert invalid.returncode == 2
    lines = invalid.stderr.strip().splitlines()
    assert lines[0].startswith(f"{bad}:7: rules[0].conditions.all[0].value: expected a number")
    assert lines[1].startswith(f"{bad}:8: rules[0].actions[0].type: unknown action 'add_tags'")
    assert hub.cli("rules", "apply", str(bad)).returncode == 2  # nothing applied

    rehearsed = hub.cli("rules", "test", str(SAMPLE), "--since", "30d")
    assert rehearsed.returncode == 0, rehearsed.stderr
    assert "5 rules over 0 events since" in rehearsed.stdout
    assert "nothing written" in rehearsed.stdout
    wrong = hub.cli("rules", "test", str(SAMPLE), "--since", "soon")
    assert wrong.returncode == 2 and "--since" in wrong.stderr
    assert hub.cli("rules", "test", str(bad)).returncode == 2

    applied = hub.cli("rules", "apply", str(SAMPLE))
    assert applied.returncode == 0, applied.stderr
    assert "5 created, 0 updated, 0 disabled, 0 unchanged" in applied.stdout

    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(YAML_RULES)
    again = hub.cli("rules", "apply", str(smaller))
    assert again.returncode == 0, again.stderr
    assert "1 created, 0 updated, 5 disabled, 0 unchanged" in again.stdout

    listed = hub.cli("rules", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.strip().splitlines()]
    assert [(row[0], row[1], row[2]) for row in rows][:2] == [
        ("complaint-auto-reply", "v2", "disabled"),
        ("welcome-new-customer", "v2", "disabled"),
    ]
    assert next(row[:3] for row in rows if row[0] == "big-order") == ["big-order", "v1", "enabled"]
