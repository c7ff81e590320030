"""Redis key layout: every key pointgate writes, and the hash tag that places it.

Pure functions, no I/O. The layout is documented in `docs/keys.md`; keep the
two in step.

Everything one member movement touches carries the member's partition tag
`{mPPP}` (PPP = the last three digits of any of the member's device slots,
and digits 2-4 of the member id), so one Lua script touches one hash slot and
the same code runs on one Redis and on Redis Cluster.
"""

from __future__ import annotations

from gateway.codes import PARTITIONS, partition_of_slot

PREFIX = "pg"
# PARTITIONS (1000) member partitions: a partition is a hash tag, not a server.
# Redis Cluster spreads 1000 tags over its 16384 slots, so the tag count bounds
# how far member data can be spread (1000 is enough for hundreds of shards).


def partition_tag(partition: int) -> str:
    if not 0 <= partition < PARTITIONS:
        raise ValueError(f"partition {partition} is outside 0..{PARTITIONS - 1}")
    return f"{{m{partition:03d}}}"


def partition_of_member(member_id: str) -> int:
    """Member ids look like `m` + 3-digit partition + 12 hex digits."""
    return int(member_id[1:4])


def member_key(member_id: str) -> str:
    """Hash: `available`, `held` (points), `unit`, `created_ms`."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:member:{member_id}"


def member_devices_key(member_id: str) -> str:
    """Set of the member's device slots."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:devices:{member_id}"


def member_active_devices_key(member_id: str) -> str:
    """Set of the member's device slots that are not revoked (what the device limit counts)."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:activedevices:{member_id}"


def device_enrolment_key(member_id: str, idempotency_key: str) -> str:
    """Hash: `request_hash`, `key_id`, `answer` (AES-GCM: the answer holds the device's secret and
    token), `created_ms` of a member's device enrolment under its Idempotency-Key; expires."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:enrolment:{member_id}:{idempotency_key}"


def device_key(slot: int) -> str:
    """Hash: `member_id`, `status`, `key_id`, `secret` (AES-GCM), `failures`, `enrolled_ms`, and the
    `token_hash` of the bearer token a member's enrolment gave it."""
    return f"{PREFIX}:{partition_tag(partition_of_slot(slot))}:dev:{slot}"


def used_codes_key(slot: int) -> str:
    """Sorted set of burned code counters (step * 10 + seq) of one device, trimmed to the window."""
    return f"{PREFIX}:{partition_tag(partition_of_slot(slot))}:used:{slot}"


def partition_slots_key(partition: int) -> str:
    """Set of every device slot in a partition (key rotation walks it)."""
    return f"{PREFIX}:{partition_tag(partition)}:slots"


def partition_members_key(partition: int) -> str:
    """Set of every member id in a partition (the audit walks it)."""
    return f"{PREFIX}:{partition_tag(partition)}:members"


def journal_key(partition: int) -> str:
    """Stream: one entry per movement of this partition's members."""
    return f"{PREFIX}:{partition_tag(partition)}:journal"


def entry_index_key(partition: int) -> str:
    """Hash: journal entry id -> stream id, so an entry is applied at most once."""
    return f"{PREFIX}:{partition_tag(partition)}:entries"


def hold_key(partition: int, hold_id: str) -> str:
    """Hash: a two-phase hold's `state`, `member_id`, `amount`, `unit`, `entry_id`."""
    return f"{PREFIX}:{partition_tag(partition)}:hold:{hold_id}"


def new_member_id(partition: int, random_hex: str) -> str:
    """A member id: `m`, the 3-digit partition, 12 random hex digits (never member data)."""
    partition_tag(partition)
    return f"m{partition:03d}{random_hex}"


# -- merchant scope ----------------------------------------------------------
# Everything about one merchant (its registry entry, keys, nonces, idempotency
# keys, order references, batches) carries the tag {mc:<merchant_id>}.

MERCHANTS_KEY = f"{PREFIX}:merchants"
"""Set of every merchant id (administration only, never on the payment path)."""


def merchant_tag(merchant_id: str) -> str:
    return f"{{mc:{merchant_id}}}"


def merchant_key(merchant_id: str) -> str:
    """Hash: `name`, `currency`, `time_zone`, `business_day_cutoff`, `receipt_width`, `status`, `created_ms`."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:merchant"


def merchant_store_key(merchant_id: str, store_id: str) -> str:
    """Hash: the store's `name`, `created_ms`."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:store:{store_id}"


def merchant_stores_key(merchant_id: str) -> str:
    """Set of the merchant's store ids."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:stores"


def store_terminals_key(merchant_id: str, store_id: str) -> str:
    """Set of the terminal ids of one store."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:terminals:{store_id}"


def signing_key_key(merchant_id: str, key_id: str) -> str:
    """Hash: `status` (active, revoked), `secret` (AES-256-GCM), `created_ms`, `revoked_ms`."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:key:{key_id}"


def signing_keys_key(merchant_id: str) -> str:
    """Set of the merchant's signing key ids, active and revoked."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:keys"


def nonce_key(merchant_id: str, nonce: str) -> str:
    """String with an expiry: a request nonce seen inside the signature window (a payment verb's
    holds its idempotency key's name: the attempt that burned it may continue its own claim)."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:nonce:{nonce}"


def idempotency_key(merchant_id: str, key: str) -> str:
    """Hash: `request_hash`, `state`, `response` (exact bytes), `created_ms`; expires after the retention.
    Between a payment verb's steps: `state` claimed, and a sale's `payment_id` and `decline`, a refund's
    `refund_id`, a partner member's sale's `payment_id` and `lease_ms`."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:idem:{key}"


def order_key(merchant_id: str, order_ref: str) -> str:
    """Hash: the latest sale's `payment_id` and `state` (claimed, taken, declined) for an order reference,
    and `reversed`."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:order:{order_ref}"


def guess_counter_keys(merchant_id: str, store_id: str, terminal_id: str, minute: int) -> list[str]:
    """Hashes (`n`, expire after two minutes): invalid codes a terminal, and its whole merchant,
    sent in one minute (the sale refuses to check codes beyond the limits)."""
    return [f"{PREFIX}:{merchant_tag(merchant_id)}:guesses:{store_id}:{terminal_id}:{minute}",
            f"{PREFIX}:{merchant_tag(merchant_id)}:guesses:{minute}"]


def batch_key(merchant_id: str, store_id: str, terminal_id: str) -> str:
    """Hash: the terminal's open `batch_no` and its `sale_`, `void_`, `refund_` counts and amounts."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:batch:{store_id}:{terminal_id}"


def batch_log_key(merchant_id: str, store_id: str, terminal_id: str) -> str:
    """List: `batch_no|kind|payment_id|amount` for every movement of the open batch."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:batchlog:{store_id}:{terminal_id}"


def closed_batches_key(merchant_id: str, store_id: str, terminal_id: str) -> str:
    """Hash: batch number -> JSON of the closed batch, for reconciliation."""
    return f"{PREFIX}:{merchant_tag(merchant_id)}:batches:{store_id}:{terminal_id}"


def payment_key(payment_id: str) -> str:
    """Hash: one payment's record (see gateway/payments.py). Payment ids carry the member partition."""
    return f"{PREFIX}:{partition_tag(partition_of_payment(payment_id))}:pay:{payment_id}"


def reversal_marker_key(payment_id: str) -> str:
    """Hash, expires with the idempotency keys: the reversal of a payment, in the payment's own
    scope: `reversal` (the reversal's idempotency key), `outcome` (`recorded`: the sale had only
    its claim and can never move; `reversed`), `amount` (for the terminal batch), `created_ms`."""
    return f"{PREFIX}:{partition_tag(partition_of_payment(payment_id))}:payrev:{payment_id}"


def adjustments_key(payment_id: str) -> str:
    """Hash, expires with the idempotency keys: what each cancel and refund of a payment did, in the
    payment's own scope: field = the request's name (its idempotency key's), value = JSON
    `[request hash, response, amount for the batch]`. A retry or a duplicate of the request that reaches
    the move again gets this answer instead of moving the points twice."""
    return f"{PREFIX}:{partition_tag(partition_of_payment(payment_id))}:payadj:{payment_id}"


def refunds_key(payment_id: str) -> str:
    """List: JSON of each refund of one payment, in order."""
    return f"{PREFIX}:{partition_tag(partition_of_payment(payment_id))}:refunds:{payment_id}"


def new_payment_id(partition: int, random_hex: str) -> str:
    """`pay_`, the member's 3-digit partition, 16 random hex digits."""
    partition_tag(partition)
    return f"pay_{partition:03d}{random_hex}"


def partition_of_payment(payment_id: str) -> int:
    return int(payment_id[4:7])


def affiliate_budget_key(affiliate_id: str) -> str:
    """Hash: `budget_points` (from affiliates.toml) and `issued_points` (all earnings so far)."""
    return f"{PREFIX}:{merchant_tag(affiliate_id)}:budget"


def earning_key(affiliate_id: str, affiliate_ref: str) -> str:
    """String: the earning id an affiliate's own reference was credited under (one credit per reference)."""
    return f"{PREFIX}:{merchant_tag(affiliate_id)}:earning:{affiliate_ref}"


def earning_answer_key(member_id: str, earning_id: str) -> str:
    """String, expires with the idempotency keys: the answer (JSON) an affiliate's earning got when it
    credited the member, so every attempt of the earning gets the same bytes."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:earned:{member_id}:{earning_id}"


def member_token_key(partition: int, token_hash: str) -> str:
    """Hash: a member bearer token's `member_id`, `slot`, `status`, `expires_ms`; keyed by the token's SHA-256."""
    return f"{PREFIX}:{partition_tag(partition)}:token:{token_hash}"


CONSOLE_TAG = "{console}"


def console_token_key(token_hash: str) -> str:
    """Hash, expires: an operator console token, stored only as its SHA-256: `operator_id`, `expires_ms`."""
    return f"{PREFIX}:{CONSOLE_TAG}:token:{token_hash}"


def console_tokens_key(operator_id: str) -> str:
    """Set: the hashes of an operator's console tokens (revoking walks it)."""
    return f"{PREFIX}:{CONSOLE_TAG}:tokens:{operator_id}"


CONSOLE_CHANNEL = f"{PREFIX}:console:feed"
"""Pub/sub channel, not a key: every process publishes its sale outcomes and window snapshots
for the operator console here; nothing is stored (docs/web.md)."""


def partner_key_key(partner_id: str) -> str:
    """Hash: the key a partner network issued us: `key_id`, `secret` (AES-256-GCM), `keyring_key_id`."""
    return f"{PREFIX}:partner:{{{partner_id}}}:outkey"


def partner_reversals_key(partner_id: str) -> str:
    """Set: our payment ids whose reversal at the partner is still owed (sent by a background task)."""
    return f"{PREFIX}:partner:{{{partner_id}}}:reversals"


FX_TABLE_KEY = f"{PREFIX}:fx:table"
"""String: the operator's current rate table (the rates of fx.toml as JSON); absent: fx.toml's."""


def exchange_key(partition: int, exchange_id: str) -> str:
    """String: JSON of one points exchange a member sent to a partner network (state, points, quote)."""
    return f"{PREFIX}:{partition_tag(partition)}:exchange:{exchange_id}"


def exchange_lease_key(partition: int, exchange_id: str) -> str:
    """String with a TTL: an attempt of the exchange is asking the partner now (one at a time)."""
    return f"{PREFIX}:{partition_tag(partition)}:exlease:{exchange_id}"


def inbound_exchange_key(partner_id: str, exchange_ref: str) -> str:
    """String: JSON of the credit a partner's exchange reference gave our member (its replayed answer)."""
    return f"{PREFIX}:{merchant_tag(partner_id)}:xin:{exchange_ref}"


def partner_exchanges_key(partner_id: str) -> str:
    """Set: `<member_id>/<exchange_id>` of exchanges whose outcome at the partner is still unknown."""
    return f"{PREFIX}:partner:{{{partner_id}}}:exchanges"


def member_events_key(member_id: str) -> str:
    """Stream: one event per movement of the member's wallet (the app's history and live feed)."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:events:{member_id}"


def member_lots_key(member_id: str) -> str:
    """Sorted set: the member's lots of expiring points (lot id = the crediting entry id), scored by expiry ms."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:lots:{member_id}"


def member_lot_points_key(member_id: str) -> str:
    """Hash: lot id -> the lot's points not yet spent or expired."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:lotpoints:{member_id}"


def lots_due_key(partition: int) -> str:
    """Sorted set: `<member id> <lot id>` of every lot in the partition, scored by expiry ms (the expiry job's index)."""
    return f"{PREFIX}:{partition_tag(partition)}:lotsdue"


def wallet_keys(member_id: str) -> list[str]:
    """The member scope of every movement, in the order the Lua library's wallet_keys() reads them."""
    partition = partition_of_member(member_id)
    return [member_key(member_id), journal_key(partition), entry_index_key(partition), member_events_key(member_id),
            member_lots_key(member_id), member_lot_points_key(member_id), lots_due_key(partition)]


# -- cash-out ------------------------------------------------------------------
# A member's bank accounts and cash-outs live in the member's partition; only
# the queue of cash-outs whose outcome at the bank is unknown is global.


def bank_accounts_key(member_id: str) -> str:
    """Hash: bank account id -> JSON of a linked account (`bank_code`, masked number, holder,
    `account_number_sealed` (AES-256-GCM), `keyring_key_id`)."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:bankaccts:{member_id}"


def cashout_key(partition: int, cashout_id: str) -> str:
    """String: JSON of one cash-out (state pending, paid or failed; points, fee, amount, masked account, times)."""
    return f"{PREFIX}:{partition_tag(partition)}:cashout:{cashout_id}"


def member_cashouts_key(member_id: str) -> str:
    """Sorted set: the member's cash-out ids, scored by creation ms (the list, newest first)."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:cashouts:{member_id}"


def cashout_lease_key(partition: int, cashout_id: str) -> str:
    """String with an expiry: held by the one process talking to the bank about a cash-out right now."""
    return f"{PREFIX}:{partition_tag(partition)}:cashoutlease:{cashout_id}"


CASHOUTS_PENDING_KEY = f"{PREFIX}:bank:pending"
"""Set: `<member_id>/<cashout_id>` of cash-outs whose outcome at the bank is still unknown (resolved in the background)."""


# -- coupons -------------------------------------------------------------------
# An issued coupon lives in its member's partition, so the payment script that
# redeems it touches only that partition. Campaigns (the terms coupons are
# issued under) are global: they are read when issuing, never on the payment path.

CAMPAIGNS_KEY = f"{PREFIX}:campaigns"
"""Hash: campaign id -> JSON of the campaign (config/campaigns.toml's, and the operators')."""

CAMPAIGN_ISSUED_KEY = f"{PREFIX}:campaigns:issued"
"""Hash: campaign id -> coupons issued so far (the total_limit counter; never below the true count)."""


def coupon_key(partition: int, code: str) -> str:
    """Hash: one issued coupon, a snapshot of its campaign's terms (fields in gateway/coupons.py COUPON_FIELDS)."""
    return f"{PREFIX}:{partition_tag(partition)}:coupon:{code}"


def member_coupons_key(member_id: str) -> str:
    """Sorted set: the member's coupon codes, scored by issued ms."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:coupons:{member_id}"


def coupon_counts_key(member_id: str) -> str:
    """Hash: campaign id -> coupons of that campaign issued to the member (the per-member limit's counter)."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:couponcount:{member_id}"


def coupon_request_key(member_id: str, requester: str, idempotency_key: str) -> str:
    """Hash with an expiry: `request_hash`, `code` of the coupon one issue request gave the member (its retries get it)."""
    return f"{PREFIX}:{partition_tag(partition_of_member(member_id))}:couponreq:{member_id}:{requester}:{idempotency_key}"


# -- views and settlement ------------------------------------------------------


def view_key(partition: int, day: str) -> str:
    """Hash: one day's view counters of the partition's journal (gateway/views.py lists the fields)."""
    return f"{PREFIX}:{partition_tag(partition)}:view:{day}"


def view_items_key(partition: int, day: str) -> str:
    """List: JSON of the day's cross-network payments and give-backs, for reconciliation with partners."""
    return f"{PREFIX}:{partition_tag(partition)}:viewitems:{day}"


def view_days_key(partition: int) -> str:
    """Set: the days the partition's views have counters for."""
    return f"{PREFIX}:{partition_tag(partition)}:viewdays"


def view_applied_key(partition: int) -> str:
    """Set: stream ids of journal entries applied to the views (an entry is applied once)."""
    return f"{PREFIX}:{partition_tag(partition)}:viewapplied"


def view_stats_key(partition: int) -> str:
    """Hash: `applied`, the number of journal entries applied (lag = journal length - applied)."""
    return f"{PREFIX}:{partition_tag(partition)}:viewstats"


SETTLEMENT_TAG = "{settle}"
SETTLEMENT_JOURNAL_KEY = f"{PREFIX}:{SETTLEMENT_TAG}:journal"
"""Stream: the settlement entries (a merchant's day moved from payable to settled, the fee kept)."""
SETTLEMENT_ENTRIES_KEY = f"{PREFIX}:{SETTLEMENT_TAG}:entries"
"""Hash: settlement entry id -> stream id (a merchant's day settles once)."""


def settlement_report_key(day: str, merchant_id: str) -> str:
    """String: JSON of a merchant's settlement of a day, as first written (a rerun gives the same)."""
    return f"{PREFIX}:{SETTLEMENT_TAG}:report:{day}:{merchant_id}"
