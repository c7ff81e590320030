"""The merchant payment API through HTTP: sale, declines, lookups, cancel, refund, reversal, batches."""

from __future__ import annotations

import asyncio

import pytest

from gateway.audit import run_audit
from gateway.app import STORE


async def test_sale_is_approved_and_debits_points(gateway):
    """A GS25 sale with the member's code is approved, debits exactly the amount and says the balance after."""
    terminal, member = await gateway.terminal(), await gateway.member(points=12_000)
    status, payment, headers = await terminal.pay(member.code(), 4_500, order_ref="POS1-0001")
    assert (201, "approved", 4_500, 7_500) == (status, payment["status"], payment["points"], payment["balance_after"])
    assert 6 == len(payment["approval_code"]) and headers["x-request-id"].startswith("req_")
    assert 7_500 == await gateway.balance(member)


async def test_insufficient_points_declines_and_moves_nothing(gateway):
    """A sale above the balance is a declined payment with a cashier message, and the balance is unchanged."""
    terminal, member = await gateway.terminal(), await gateway.member(points=1_000)
    status, payment, _ = await terminal.pay(member.code(), 4_500)
    assert (201, "declined", "insufficient_points", 0) == (status, payment["status"], payment["decline"]["code"], payment["points"])
    assert payment["decline"]["message"] and payment["decline"]["message_ko"]
    assert 1_000 == await gateway.balance(member)


async def test_replayed_code_declines(gateway):
    """The same code in a second sale (new order) is declined as replayed."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    code = member.code()
    await terminal.pay(code, 1_000)
    _, again, _ = await terminal.pay(code, 1_000)
    assert "replayed_code" == again["decline"]["code"]
    assert 9_000 == await gateway.balance(member)


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda c: c[:-1] + str((int(c[-1]) + 1) % 10), "unreadable_code"),
    (lambda c: "12345", "unreadable_code"),
])
async def test_unreadable_codes_decline(gateway, mutate, reason):
    """A misread code is declined as unreadable before any storage lookup."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, payment, _ = await terminal.pay(mutate(member.code()), 1_000)
    assert reason == payment["decline"]["code"]


async def test_expired_and_wrong_codes_decline(gateway):
    """A stale code declines expired; a forged OTP declines invalid_code."""
    import time
    from gateway import codes

    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, stale, _ = await terminal.pay(member.code(time.time() - 300), 1_000)
    body = member.code()[:15] + "00000000"
    _, forged, _ = await terminal.pay(body + codes.luhn_check_digit(body), 1_000)
    assert ("expired_code", "invalid_code") == (stale["decline"]["code"], forged["decline"]["code"])


async def test_partner_and_unknown_issuers_decline(gateway):
    """A Taishin code is unsupported_issuer until cross-network routing exists; an unknown prefix is unknown_issuer."""
    from gateway import codes

    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    code = member.code()
    partner = "8860" + code[4:23]
    unknown = "1111" + code[4:23]
    _, p, _ = await terminal.pay(partner + codes.luhn_check_digit(partner), 100)
    _, u, _ = await terminal.pay(unknown + codes.luhn_check_digit(unknown), 100)
    assert ("unsupported_issuer", "unknown_issuer") == (p["decline"]["code"], u["decline"]["code"])


async def test_locked_device_declines(gateway):
    """After five wrong codes the device is locked and its right code declines locked_device."""
    from gateway import codes

    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    for guess in range(5):
        body = f"{member.prefix}1{member.phone.slot:09d}0{guess:08d}"
        await terminal.pay(body + codes.luhn_check_digit(body), 100)
    _, payment, _ = await terminal.pay(member.code(), 100)
    assert "locked_device" == payment["decline"]["code"]


async def test_daily_limit_declines(gateway, settings):
    """Sales past the member's daily maximum decline limit_exceeded."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000_000)
    _, first, _ = await terminal.pay(member.code(), 2_000_000)
    _, second, _ = await terminal.pay(member.code(), 1_500_000)
    assert ("approved", "limit_exceeded") == (first["status"], second["decline"]["code"])


async def test_coupons_decline_until_campaigns_exist(gateway):
    """A coupon code no campaign issued declines invalid_coupon and moves nothing."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, payment, _ = await terminal.pay(member.code(), 1_000, coupon_codes=["WELCOME10"])
    assert "invalid_coupon" == payment["decline"]["code"]
    assert 5_000 == await gateway.balance(member)


async def test_get_and_find_by_order_ref(gateway):
    """A payment is found by id and by the terminal's order reference, with the same content."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, payment, _ = await terminal.pay(member.code(), 1_000, order_ref="POS1-0042")
    s1, by_id, _ = await terminal.send("GET", f"/v1/payments/{payment['payment_id']}")
    s2, by_ref, _ = await terminal.send("GET", "/v1/payments?order_ref=POS1-0042")
    assert (200, 200) == (s1, s2)
    assert by_id == by_ref and payment["payment_id"] == by_id["payment_id"] and [] == by_id["refunds"]


async def test_cancel_restores_points(gateway):
    """Cancelling on the same business day gives every point back, once."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, payment, _ = await terminal.pay(member.code(), 3_000)
    path = f"/v1/payments/{payment['payment_id']}/cancel"
    status, cancelled, _ = await terminal.send("POST", path, terminal.here())
    again, problem, _ = await terminal.send("POST", path, terminal.here())
    assert (200, "cancelled", 5_000) == (status, cancelled["status"], cancelled["balance_after"])
    assert (409, "invalid_state") == (again, problem["code"])
    assert 5_000 == await gateway.balance(member)


async def test_partial_refunds_never_exceed_the_payment(gateway):
    """Refunds add up to at most what was paid; the last one that would exceed it is refused."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, payment, _ = await terminal.pay(member.code(), 6_000)
    path = f"/v1/payments/{payment['payment_id']}/refunds"
    s1, r1, _ = await terminal.send("POST", path, {"amount": 2_000, **terminal.here()})
    s2, r2, _ = await terminal.send("POST", path, {"amount": 4_000, **terminal.here()})
    s3, r3, _ = await terminal.send("POST", path, {"amount": 1, **terminal.here()})
    assert (201, "partially_refunded", 6_000) == (s1, r1["payment"]["status"], r1["refund"]["balance_after"])
    assert (201, "refunded", 10_000) == (s2, r2["payment"]["status"], r2["refund"]["balance_after"])
    assert (409, "invalid_state") == (s3, r3["code"])
    _, fetched, _ = await terminal.send("GET", f"/v1/payments/{payment['payment_id']}")
    assert [2_000, 4_000] == [r["amount"] for r in fetched["refunds"]]


async def test_refund_above_remaining_is_refused(gateway):
    """A refund larger than what is left is refused naming what is left."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, payment, _ = await terminal.pay(member.code(), 3_000)
    status, problem, _ = await terminal.send("POST", f"/v1/payments/{payment['payment_id']}/refunds", {"amount": 3_001, **terminal.here()})
    assert (409, "refund_exceeds_payment", "at most 3000 can still be refunded") == (status, problem["code"], problem["detail"])


async def test_reversal_after_sale_restores_points(gateway):
    """A reversal by order reference of an approved sale gives the points back."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    await terminal.pay(member.code(), 2_000, order_ref="POS1-0100")
    status, reversal, _ = await terminal.send("POST", "/v1/reversals", {"order_ref": "POS1-0100", **terminal.here()})
    assert (200, "reversed", "reversed") == (status, reversal["outcome"], reversal["payment"]["status"])
    assert 5_000 == await gateway.balance(member)


async def test_reversal_before_sale_wins(gateway):
    """A reversal that arrives before its sale makes the late sale decline as reversed."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, reversal, _ = await terminal.send("POST", "/v1/reversals", {"order_ref": "POS1-0200", **terminal.here()})
    _, late, _ = await terminal.pay(member.code(), 2_000, order_ref="POS1-0200")
    assert ("recorded", None) == (reversal["outcome"], reversal["payment"])
    assert ("declined", "reversed") == (late["status"], late["decline"]["code"])
    assert 5_000 == await gateway.balance(member)


async def test_order_ref_with_an_approved_sale_is_in_use(gateway):
    """A second sale under an order reference that has an approved sale is refused."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    await terminal.pay(member.code(), 1_000, order_ref="POS1-0300")
    status, problem, _ = await terminal.pay(member.code(), 1_000, order_ref="POS1-0300")
    assert (409, "order_ref_in_use") == (status, problem["code"])


async def test_declined_order_ref_can_be_tried_again(gateway):
    """After a decline (expired code) the cashier retries the same order with a fresh code."""
    import time

    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, first, _ = await terminal.pay(member.code(time.time() - 300), 1_000, order_ref="POS1-0400")
    _, second, _ = await terminal.pay(member.code(), 1_000, order_ref="POS1-0400")
    assert ("declined", "approved") == (first["status"], second["status"])


async def test_batch_close_matches_and_opens_next(gateway):
    """The terminal's batch totals match the gateway's; the next batch starts empty."""
    terminal, member = await gateway.terminal(), await gateway.member(points=20_000)
    _, p1, _ = await terminal.pay(member.code(), 3_000)
    _, p2, _ = await terminal.pay(member.code(), 2_000)
    await terminal.send("POST", f"/v1/payments/{p2['payment_id']}/cancel", terminal.here())
    report = {"store_id": terminal.store_id, "sale_count": 2, "sale_amount": 5_000, "void_count": 1, "void_amount": 2_000,
              "payment_ids": [p1["payment_id"], p2["payment_id"]]}
    status, batch, _ = await terminal.send("POST", "/v1/terminals/t1/batches", report)
    assert (200, "matched", 1, 2) == (status, batch["status"], batch["batch_no"], batch["next_batch_no"])
    _, empty, _ = await terminal.send("POST", "/v1/terminals/t1/batches", {"store_id": terminal.store_id, "sale_count": 0, "sale_amount": 0})
    assert ("matched", 2) == (empty["status"], empty["batch_no"])


async def test_batch_close_lists_differences(gateway):
    """A terminal that missed a sale gets the count, amount and the payment id that differ."""
    terminal, member = await gateway.terminal(), await gateway.member(points=20_000)
    _, p1, _ = await terminal.pay(member.code(), 3_000)
    _, p2, _ = await terminal.pay(member.code(), 1_000)
    report = {"store_id": terminal.store_id, "sale_count": 1, "sale_amount": 3_000, "payment_ids": [p1["payment_id"]]}
    _, batch, _ = await terminal.send("POST", "/v1/terminals/t1/batches", report)
    assert "mismatched" == batch["status"]
    assert {"difference": "total", "field": "sale_count", "terminal": 1, "gateway": 2} in batch["differences"]
    # An answer to payment_ids keeps the keys it always had (field, missing_on, gateway_amount).
    assert {"difference": "missing_at_terminal", "payment_id": p2["payment_id"], "kind": "sale", "terminal_amount": None,
            "gateway_amount": 1_000, "field": "payment", "missing_on": "terminal"} in batch["differences"]


async def test_randomized_mix_conserves_points(gateway):
    """After a random mix of sales, cancels, refunds and reversals, the audit is clean and points are conserved."""
    import random

    rng = random.Random(11)
    terminal = await gateway.terminal()
    members = [await gateway.member(points=50_000) for _ in range(4)]
    payments = []
    for i in range(60):
        op = rng.choice(["sale", "sale", "sale", "cancel", "refund", "reversal"])
        if op == "sale" or not payments:
            _, p, _ = await terminal.pay(rng.choice(members).code(), rng.randint(100, 9_000), order_ref=f"mix-{i}")
            if p["status"] == "approved":
                payments.append(p)
        elif op == "cancel":
            await terminal.send("POST", f"/v1/payments/{rng.choice(payments)['payment_id']}/cancel", terminal.here())
        elif op == "refund":
            await terminal.send("POST", f"/v1/payments/{rng.choice(payments)['payment_id']}/refunds",
                                {"amount": rng.randint(1, 3_000), **terminal.here()})
        else:
            await terminal.send("POST", "/v1/reversals", {"order_ref": rng.choice(payments)["order_ref"], **terminal.here()})
    report = await run_audit(gateway.app[STORE])
    assert report.clean, report.problems
    totals = report.totals_by_unit()["HMP"]
    assert 200_000 == totals["members_available"] + totals.get("merchant:gs25", 0)
    assert -200_000 == totals["affiliate:hana-card"]


async def test_same_code_at_two_terminals_one_approval(gateway):
    """The same code presented at two terminals at the same moment is approved once."""
    t1 = await gateway.terminal()
    t2 = await gateway.terminal("cu", "cu-jongno-01", "t1")
    member = await gateway.member(points=10_000)
    code = member.code()
    results = await asyncio.gather(t1.pay(code, 1_000), t2.pay(code, 1_000))
    statuses = sorted(r[1]["status"] for r in results)
    assert ["approved", "declined"] == statuses
    assert 9_000 == await gateway.balance(member)
