"""What `PosClient` and `AsyncPosClient` share: the verbs as core operations,
wrapped with the local journal. The two clients differ only in how they send
a request and how they sleep."""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Mapping
from urllib.parse import quote

from pos_sdk import core, errors
from pos_sdk.config import PosConfig
from pos_sdk.journal import Journal, OutboxEntry
from pos_sdk.models import BatchResult, Payment, RefundResult, ReversalResult


class ClientBase:
    def __init__(self, config: PosConfig, *, journal: Journal | None = None,
                 now_s: Callable[[], float] = time.time, random_unit: Callable[[], float] = random.random) -> None:
        self.config = config
        self.journal = journal or Journal(config.journal_path)
        self.ctx = core.Context(config, now_s, random_unit)

    def _new_key(self, kind: str) -> str:
        return f"{self.config.terminal_id}-{kind}-{self.ctx.token_hex(12)}"

    # -- operations (generators driven by the concrete client) -------------------

    def _pay(self, code: str, amount: int, order_ref: str, currency: str | None, coupon_codes: tuple[str, ...],
             line_items: tuple[Mapping[str, Any], ...], idempotency_key: str | None) -> core.Operation:
        document = core.sale_document(self.config, code, amount, order_ref, currency, coupon_codes, line_items)
        entry = self.journal.begin("pay", order_ref, document, self._new_key("sale"), self._new_key("reversal"),
                                   self.ctx.now_s(), idempotency_key)
        return (yield from self._drive_sale(entry.idempotency_key, entry.document, entry.reversal_key))

    def _drive_sale(self, key: str, document: dict[str, Any], reversal_key: str) -> core.Operation:
        try:
            payment = yield from core.pay(self.ctx, document, key, reversal_key)
        except errors.ReversalQueued as e:
            method, path, body, queued_key = e.details["reversal"]
            self.journal.enqueue("reversal", method, path, body, queued_key, self.ctx.now_s())
            self.journal.finish(key, "done", {"outcome": "reversal_queued"}, self.ctx.now_s())
            raise
        except errors.PaymentNotCompleted as e:
            self.journal.finish(key, "done", {"outcome": e.code}, self.ctx.now_s())
            raise
        except errors.RequestError as e:
            self.journal.finish(key, "failed", {"error": e.code}, self.ctx.now_s())
            raise
        self.journal.finish(key, "done", {"outcome": "approved", "payment_id": payment.payment_id}, self.ctx.now_s())
        return payment

    def _write(self, kind: str, path: str, document: dict[str, Any], idempotency_key: str | None,
               forward: bool) -> core.Operation:
        """A journaled write; when `forward`, an unreachable gateway queues it instead of failing."""
        entry = self.journal.begin(kind, path, document, self._new_key(kind), "", self.ctx.now_s(), idempotency_key)
        try:
            doc = yield from core.call(self.ctx, "POST", path, entry.document, entry.idempotency_key)
        except errors.PosError as error:
            if forward and core.is_retryable(error):
                entry_id = self.journal.enqueue(kind, "POST", path, entry.document, entry.idempotency_key, self.ctx.now_s())
                self.journal.finish(entry.idempotency_key, "done", {"outcome": "queued", "outbox_id": entry_id}, self.ctx.now_s())
                raise errors.ForwardQueued("queued", f"the gateway is unreachable; the {kind} is stored and will be sent",
                                           outbox_id=entry_id) from error
            if not core.is_retryable(error):
                self.journal.finish(entry.idempotency_key, "failed", {"error": error.code}, self.ctx.now_s())
            raise  # an unknown outcome stays pending: `resume` sends it again with the same key
        self.journal.finish(entry.idempotency_key, "done", doc, self.ctx.now_s())
        return doc

    def _get(self, path: str) -> core.Operation:
        return (yield from core.call(self.ctx, "GET", path))

    def _get_payment(self, payment_id: str) -> core.Operation:
        return Payment.from_json((yield from self._get("/v1/payments/" + quote(payment_id, safe=""))))

    def _find(self, order_ref: str) -> core.Operation:
        return Payment.from_json((yield from self._get("/v1/payments?order_ref=" + quote(order_ref, safe=""))))

    def _place(self) -> dict[str, str]:
        return {"store_id": self.config.store_id, "terminal_id": self.config.terminal_id}

    def _cancel(self, payment_id: str, reason: str, idempotency_key: str | None) -> core.Operation:
        path = f"/v1/payments/{quote(payment_id, safe='')}/cancel"
        return Payment.from_json((yield from self._write("cancel", path, {**self._place(), "reason": reason}, idempotency_key, False)))

    def _refund(self, payment_id: str, amount: int, reason: str, idempotency_key: str | None) -> core.Operation:
        path = f"/v1/payments/{quote(payment_id, safe='')}/refunds"
        document = {"amount": amount, **self._place(), "reason": reason}
        return RefundResult.from_json((yield from self._write("refund", path, document, idempotency_key, self.config.forward_refunds)))

    def _reverse(self, order_ref: str, reason: str, idempotency_key: str | None) -> core.Operation:
        document = core.reversal_document(self.config, order_ref, reason)
        return ReversalResult.from_json((yield from self._write("reversal", "/v1/reversals", document, idempotency_key, True)))

    def _close_batch(self, totals: Mapping[str, int], payment_ids: list[str] | None, idempotency_key: str | None) -> core.Operation:
        document: dict[str, Any] = {"store_id": self.config.store_id, **totals}
        if payment_ids is not None:
            document["payment_ids"] = list(payment_ids)
        path = f"/v1/terminals/{quote(self.config.terminal_id, safe='')}/batches"
        return BatchResult.from_json((yield from self._write("batch", path, document, idempotency_key, False)))

    def _flush(self) -> core.Operation:
        """Send every due outbox entry in order; stop at the first that still cannot get through."""
        sent: list[tuple[OutboxEntry, Any]] = []
        for entry in self.journal.outbox():
            if entry.next_attempt_s > self.ctx.now_s():
                break
            try:
                doc = yield from core.call(self.ctx, entry.method, entry.path, entry.document, entry.idempotency_key, retries=False)
            except errors.PosError as error:
                if core.is_retryable(error):
                    self.journal.outbox_retry(entry.id, error.code, self.ctx.now_s() + self.ctx.backoff_s(min(entry.attempts, 10)))
                    break  # keep the order: later entries wait for this one
                self.journal.outbox_dead(entry.id, f"{error.code}: {error.message}")
                continue
            self.journal.outbox_sent(entry.id, doc)
            sent.append((entry, doc))
        return sent

    def _resume(self) -> core.Operation:
        """Finish what a crash interrupted: every pending operation is sent again with its own key."""
        outcomes: list[tuple[str, Any]] = []
        for entry in self.journal.unfinished():
            try:
                if entry.kind == "pay":
                    result: Any = yield from self._drive_sale(entry.idempotency_key, entry.document, entry.reversal_key)
                else:
                    result = yield from self._write(entry.kind, entry.ref, entry.document, entry.idempotency_key,
                                                    entry.kind == "reversal" or (entry.kind == "refund" and self.config.forward_refunds))
            except errors.PosError as error:
                result = error
            outcomes.append((entry.idempotency_key, result))
        return outcomes
