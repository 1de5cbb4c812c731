"""Email provider rules: which spelling of an address resolution compares."""

from __future__ import annotations

import pytest

from identity.config import IdentityConfig, IdentityConfigError


def test_no_rules_by_default() -> None:
    config = IdentityConfig()
    assert config.canonical("email", "john.smith+shop@gmail.com") == "john.smith+shop@gmail.com"


def test_the_gmail_preset_ignores_dots_tags_and_the_old_domain() -> None:
    config = IdentityConfig.from_mapping({"email_rules": ["gmail"]})
    for spelling in (
        "john.smith+shop@gmail.com",
        "johnsmith@googlemail.com",
        "j.o.h.n.smith@gmail.com",
    ):
        assert config.canonical("email", spelling) == "johnsmith@gmail.com"
    # other domains, other kinds and odd addresses are left alone
    assert config.canonical("email", "john.smith+x@example.com") == "john.smith+x@example.com"
    assert config.canonical("user_id", "john.smith+shop@gmail.com") == "john.smith+shop@gmail.com"
    assert config.canonical("email", "+tag@gmail.com") == "+tag@gmail.com"


def test_rules_of_your_own() -> None:
    config = IdentityConfig.from_mapping(
        {"email_rules": [{"domains": ["Outlook.com", "hotmail.com"], "ignore_plus_tags": True}]}
    )
    assert config.canonical("email", "a.b+news@hotmail.com") == "a.b@hotmail.com"
    assert config.canonical("email", "a.b+news@outlook.com") == "a.b@outlook.com"


@pytest.mark.parametrize(
    ("rules", "where"),
    [
        ([{"domains": []}], "email_rules.0.domains"),
        ([{"domains": ["x.com"], "ignore_everything": True}], "email_rules.0.ignore_everything"),
        (["yahoo"], "email_rules.0"),
    ],
)
def test_bad_rules_name_the_key(rules: object, where: str) -> None:
    with pytest.raises(IdentityConfigError) as error:
        IdentityConfig.from_mapping({"email_rules": rules})
    assert f": {where}:" in str(error.value)
