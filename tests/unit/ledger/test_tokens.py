"""Tokens: random, shown once, stored as a hash, one role, revocable, expiring."""

from __future__ import annotations

import datetime as dt

import pytest

from dpgate_server.ledger import InvalidTokenRequest, Role
from dpgate_server.ledger.tokens import TOKEN_PREFIX, hash_token, mint_token


def _stored_hashes(store):
    return [row[0] for row in store.fetch("SELECT token_hash FROM tokens")]


def test_token_hashes_never_equal_tokens(setup):
    stored = _stored_hashes(setup.store)
    assert len(stored) == 2
    for token in (setup.alice_token, setup.bob_token):
        assert token not in stored
        assert hash_token(token) in stored


def test_token_secret_appears_nowhere_in_the_ledger(setup):
    content = setup.store.everything_stored()
    assert hash_token(setup.alice_token).encode() in content  # the dump does hold the tokens
    assert setup.alice_token.encode() not in content
    assert setup.alice_token[len(TOKEN_PREFIX) :].encode() not in content


def test_tokens_carry_at_least_256_random_bits():
    tokens = {mint_token() for _ in range(1000)}
    assert len(tokens) == 1000
    secret = next(iter(tokens))[len(TOKEN_PREFIX) :]
    assert len(secret) * 6 >= 256  # url-safe base64: 6 bits per character


def test_valid_token_authenticates_with_its_single_role(setup):
    principal = setup.ledger.authenticate(setup.alice_token)
    assert principal is not None
    assert (principal.requester_id, principal.role) == ("alice", Role.ANALYST)


@pytest.mark.parametrize("token", ["", "dpg_", "dpg_wrong", "Bearer x", "dpg_" + "a" * 500])
def test_unknown_or_malformed_token_is_rejected(setup, token):
    assert setup.ledger.authenticate(token) is None


def test_revoked_token_is_rejected(setup):
    setup.ledger.admin.revoke_token(setup.alice.token_id, request=setup.operator)
    assert setup.ledger.authenticate(setup.alice_token) is None


def test_expired_token_is_rejected(setup):
    issued = setup.ledger.admin.issue_token(
        "alice",
        Role.AUDITOR,
        expires_at=setup.clock.now + dt.timedelta(hours=1),
        request=setup.operator,
    )
    assert setup.ledger.authenticate(issued.token) is not None
    setup.clock.advance(hours=1)
    assert setup.ledger.authenticate(issued.token) is None


def test_disabled_requesters_tokens_are_rejected(setup):
    setup.ledger.admin.set_requester_enabled("alice", False, request=setup.operator)
    assert setup.ledger.authenticate(setup.alice_token) is None
    assert setup.ledger.authenticate(setup.bob_token) is not None


def test_provider_token_is_bound_to_its_practices(setup):
    issued = setup.ledger.admin.issue_token(
        "bob", Role.PROVIDER, practice_codes=["A81001", "A81002"], request=setup.operator
    )
    principal = setup.ledger.authenticate(issued.token)
    assert principal is not None
    assert principal.practice_codes == frozenset({"A81001", "A81002"})


def test_provider_token_without_practices_is_refused(setup):
    with pytest.raises(InvalidTokenRequest):
        setup.ledger.admin.issue_token("bob", Role.PROVIDER, request=setup.operator)


def test_practice_codes_on_an_analyst_token_are_refused(setup):
    with pytest.raises(InvalidTokenRequest):
        setup.ledger.admin.issue_token(
            "bob", Role.ANALYST, practice_codes=["A81001"], request=setup.operator
        )


def test_token_listing_shows_no_secret(setup):
    listed = setup.ledger.admin.list_tokens("alice")
    assert [t.token_id for t in listed] == [setup.alice.token_id]
    assert setup.alice_token not in repr(listed)
