"""services.apikeys: keys shown once, stored hashed, verified, revoked."""

from __future__ import annotations

import pytest

from spamguard.models import ApiKey
from spamguard.services import apikeys
from tests.fixtures_db import waits_for_commit


def test_create_stores_only_hash_and_prefix(db_session):
    row, plaintext = apikeys.create_api_key(session=db_session, name="gateway")
    assert plaintext.startswith("sg_") and len(plaintext) > 40
    stored = db_session.get(ApiKey, row.id)
    assert stored.key_hash == apikeys.hash_key(plaintext) != plaintext
    assert stored.key_prefix == plaintext[:12]


def test_verify_accepts_the_key_and_notes_use(db_session):
    row, plaintext = apikeys.create_api_key(session=db_session, name="gateway")
    assert apikeys.verify_api_key(session=db_session, key=plaintext).id == row.id
    assert row.last_used_at is not None


@pytest.mark.parametrize("key", ["", "sg_", "sg_nope", "not-a-key", "sg_" + "x" * 300])
def test_verify_refuses_unknown_keys(db_session, key):
    apikeys.create_api_key(session=db_session, name="gateway")
    assert apikeys.verify_api_key(session=db_session, key=key) is None


@pytest.mark.parametrize("by", ["id", "prefix", "whole key"])
def test_revoke_by_id_or_prefix(db_session, by):
    row, plaintext = apikeys.create_api_key(session=db_session, name="gateway")
    ref = {"id": str(row.id), "prefix": row.key_prefix, "whole key": plaintext}[by]
    assert apikeys.revoke_api_key(session=db_session, key_ref=ref) == (row, True)
    assert apikeys.verify_api_key(session=db_session, key=plaintext) is None


def test_revoking_twice_keeps_the_first_time(db_session):
    row, _ = apikeys.create_api_key(session=db_session, name="gateway")
    apikeys.revoke_api_key(session=db_session, key_ref=str(row.id))
    first = row.revoked_at
    assert apikeys.revoke_api_key(session=db_session, key_ref=str(row.id)) == (row, False)
    assert row.revoked_at == first


@pytest.mark.parametrize("ref", ["999", "sg_zzzzzzzzz", "sg", "²", "9" * 30])
def test_revoke_unknown_is_an_error(db_session, ref):
    with pytest.raises(apikeys.ApiKeyError):
        apikeys.revoke_api_key(session=db_session, key_ref=ref)


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_create_needs_a_name(db_session, name):
    with pytest.raises(apikeys.ApiKeyError):
        apikeys.create_api_key(session=db_session, name=name)


@pytest.mark.parametrize("name", ["gate\nway", "gate\tway", "gate\x1b[31mway", "gate\x00",
                                  "gate\u2028way", "gate\u202eyaw"])
def test_create_refuses_control_characters_in_the_name(db_session, name):
    with pytest.raises(apikeys.ApiKeyError, match="cannot hold a line break"):
        apikeys.create_api_key(session=db_session, name=name)
    assert apikeys.list_api_keys(session=db_session) == []


@pytest.mark.parametrize("name", ["Шлюз gateway ✓", "Ops team\u00a0A",
                                  "\U0001f469\u200d\U0001f4bb bot", "שער\u200f gateway"])
def test_create_keeps_a_name_in_any_script(db_session, name):
    row, _ = apikeys.create_api_key(session=db_session, name=name)
    assert row.name == name


def test_scopes_are_checked_and_kept_in_one_order(db_session):
    row, _ = apikeys.create_api_key(session=db_session, name="every")
    assert apikeys.key_scopes(row) == ("submit", "classify", "read") == apikeys.SCOPES
    row, _ = apikeys.create_api_key(session=db_session, name="two",
                                    scopes=["read", " Submit", "read"])
    assert row.scopes == "submit,read" and apikeys.key_scopes(row) == ("submit", "read")
    with pytest.raises(apikeys.ApiKeyError, match="unknown API key scope 'write'; the scopes "
                                                  "are submit, classify, read"):
        apikeys.create_api_key(session=db_session, name="bad", scopes=["submit", "write"])
    with pytest.raises(apikeys.ApiKeyError, match="at least one scope"):
        apikeys.create_api_key(session=db_session, name="none", scopes=[])
    assert set(apikeys.SCOPE_HELP) == set(apikeys.SCOPES)


def test_a_name_in_use_is_refused_in_any_case_until_its_key_is_revoked(db_session):
    row, _ = apikeys.create_api_key(session=db_session, name="Gateway")
    for name in ("Gateway", "gateway", "  GATEWAY "):
        with pytest.raises(apikeys.ApiKeyError) as refused:
            apikeys.create_api_key(session=db_session, name=name)
        assert str(refused.value) == (
            f"an API key named 'Gateway' already exists (id {row.id}, {row.key_prefix}); "
            "choose another name, or revoke that key first")
    assert apikeys.create_api_key(session=db_session, name="gateway 2")[0].name == "gateway 2"
    apikeys.revoke_api_key(session=db_session, key_ref=str(row.id))
    again, _ = apikeys.create_api_key(session=db_session, name="gateway")  # a revoked name
    assert again.id != row.id and again.name == "gateway"
    with pytest.raises(apikeys.ApiKeyError, match=f"already exists \\(id {again.id},"):
        apikeys.create_api_key(session=db_session, name="GateWay")


def test_two_keys_of_one_name_created_at_once_are_not_both_made(db_session_factory):
    """The second creation waits for the first transaction, then finds the name taken."""
    holder = db_session_factory()
    apikeys.create_api_key(session=holder, name="gateway")  # not committed yet

    def other_admin() -> str:
        with db_session_factory() as session:
            try:
                apikeys.create_api_key(session=session, name="Gateway")
                session.commit()
                return "created"
            except apikeys.ApiKeyError as exc:
                session.rollback()
                return str(exc)

    assert "an API key named 'gateway' already exists" in waits_for_commit(holder, other_admin)
    with db_session_factory() as session:
        assert [k.name for k in apikeys.list_api_keys(session=session)] == ["gateway"]
