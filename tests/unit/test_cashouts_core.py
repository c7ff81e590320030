"""The pure parts of cash-out: masking, ids, the state table, bank answers, and the cash-out settings."""

from __future__ import annotations

import json

import pytest

from gateway.cashouts import (TRANSITIONS, BankError, IllegalTransition, check_transition, mask, new_cashout_id,
                              parse_transfer)
from gateway.settings import SettingsError, load_settings


@pytest.mark.parametrize(("number", "masked"), [("1234567890123", "*********0123"), ("123456", "**3456")])
def test_mask_keeps_the_last_four_digits(number, masked):
    """Only the last four digits of an account number stay visible."""
    assert masked == mask(number)


def test_cashout_id_is_the_same_for_the_same_member_and_key_only():
    """One member and key name one cash-out; another key or member names another."""
    ids = {new_cashout_id("m622aaaaaaaaaaaa", "key-00001"), new_cashout_id("m622aaaaaaaaaaaa", "key-00001"),
           new_cashout_id("m622aaaaaaaaaaaa", "key-00002"), new_cashout_id("m623aaaaaaaaaaaa", "key-00001")}
    assert 3 == len(ids) and all(i.startswith("co_") and len(i) == 19 for i in ids)


def test_only_pending_cashouts_move_and_final_states_stay():
    """pending -> paid | failed; paid and failed never move again."""
    check_transition({"cashout_id": "co_1", "state": "pending"}, "paid")
    check_transition({"cashout_id": "co_1", "state": "pending"}, "failed")
    for final in ("paid", "failed"):
        for to in TRANSITIONS:
            with pytest.raises(IllegalTransition):
                check_transition({"cashout_id": "co_1", "state": final}, to)


@pytest.mark.parametrize("answer", [
    b"not json", b"[]", json.dumps({"transfer_id": "co_other", "state": "completed"}).encode(),
    json.dumps({"transfer_id": "co_1", "state": "processing"}).encode(),
    json.dumps({"transfer_id": "co_1", "state": "completed", "amount": 1}).encode(),
])
def test_an_answer_that_is_not_a_definite_outcome_for_this_transfer_is_unknown(answer):
    """Unreadable, another transfer's, an unknown state or another amount: BankError, so nothing is decided."""
    with pytest.raises(BankError):
        parse_transfer("co_1", 4_700, answer)


def test_a_rejection_without_a_reason_still_names_one():
    """The bank's rejection always leaves a reason on the cash-out."""
    transfer = parse_transfer("co_1", 4_700, json.dumps({"transfer_id": "co_1", "state": "rejected"}).encode())
    assert ("rejected", "rejected_by_bank") == (transfer.state, transfer.reason)


def test_shipped_cashout_settings_and_environment_overrides():
    """The defaults load with cash-out off; POINTGATE_BANK_* turn it on, and the key stays out of the repr."""
    default = load_settings(env={})
    on = load_settings(env={"POINTGATE_BANK_URL": "http://127.0.0.1:8091", "POINTGATE_BANK_API_KEY": "secret-key-0001",
                            "POINTGATE_BANK_TIMEOUT_S": "0.5"})
    assert ("", 5_000, 500) == (default.bank_url, default.cashout_min_points, default.cashout_fee_points)
    assert ("http://127.0.0.1:8091", 0.5) == (on.bank_url, on.bank_timeout_s)
    assert "secret-key-0001" not in repr(on)


@pytest.mark.parametrize(("env", "message"), [
    ({"POINTGATE_CASHOUT_FEE_POINTS": "5000"}, "cashout_fee_points: must be below cashout_min_points"),
    ({"POINTGATE_CASHOUT_MIN_POINTS": "0"}, "cashout_min_points: expected an integer from 1"),
    ({"POINTGATE_BANK_TIMEOUT_S": "soon"}, "POINTGATE_BANK_TIMEOUT_S: expected a number"),
    ({"POINTGATE_BANK_TIMEOUT_S": "0"}, "bank_timeout_s: expected a number from 0.05"),
    ({"POINTGATE_BANK_URL": "ftp://bank"}, "bank_url: expected http"),
    ({"POINTGATE_BANK_URL": "https://bank.example/"}, "bank_url: expected http"),
    ({"POINTGATE_BANK_URL": "https://bank.example"}, "bank_api_key: expected 8-256 visible ASCII characters"),
])
def test_bad_cashout_settings_name_the_key(env, message):
    """A bad cash-out value stops start-up naming the key."""
    with pytest.raises(SettingsError, match=message):
        load_settings(env=env)
