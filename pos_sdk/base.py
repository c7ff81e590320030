"""What `PosClient` and `AsyncPosClient` share: the verbs as core operations,
wrapped with the local journal. The two clients differ only in how they send
a request and how they sleep.

Every operation that ends with an answer records, with its result, the batch
movements it made (pos_sdk/batch.py), so `close_batch` can report the batch
movement by movement from the terminal's own record."""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

from pos_sdk import batch, core, errors
from pos_sdk.batch import Movement
from pos_sdk.config import PosConfig
from pos_sdk.journal import Journal, JournalEntry, OutboxEntry
from pos_sdk.models import BatchResult, Payment, RefundResult, ReversalResult


class ClientBase:
    def __init__(self, config: PosConfig, *, journal: Journal | None = None,
                 now_s: Callable[[], float] = time.time, random_unit: Callable[[], float] = random.random) -> None:
        self.config = config
        self.journal = journal or Journal(config.journal_path)
        self.ctx = core.Context(config, now_s, random_unit)

    def _new_key(self, kind: str) -> str:
        return f"{self.config.terminal_id}-{kind}-{self.ctx.token_hex(12)}"

    def _movements(self, payment: Payment | None, made: Sequence[Movement] = ()) -> list[Movement]:
        """What an operation adds to the open batch: the movements it made, after the sale of a
        payment this terminal started whose approval it never recorded (its answer was lost, and
        only a later lookup, cancel, refund or reversal showed the gateway had counted it)."""
        if (payment is not None and batch.was_approved(payment)
                and (payment.store_id, payment.terminal_id) == (self.config.store_id, self.config.terminal_id)
                and self.journal.started_sale(payment.order_ref) and not self.journal.has_sale(payment.payment_id)):
            return [batch.sale_of(payment), *made]
        return list(made)

    def _answer_movements(self, kind: str, result: Any) -> list[Movement]:
        try:
            payment, made = batch.operation_movements(kind, result)
        except (KeyError, TypeError, ValueError):
            # An answer this SDK cannot read still finishes its operation; the close will then
            # show the movement as missing at the terminal, which is what the terminal knows.
            return []
        return self._movements(payment, made)

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
            payment = e.payment if isinstance(e.payment, Payment) else None
            # Reversed by this sale's own reversal: the gateway counted the sale and its void.
            voided = [Movement(payment.payment_id, "void", payment.amount - payment.refunded_amount)] \
                if isinstance(e, errors.Reversed) and payment is not None and e.details.get("outcome") == "reversed" else []
            result = {"outcome": e.code, "payment_id": payment.payment_id if payment else None}
            self.journal.finish(key, "done", result, self.ctx.now_s(), self._movements(payment, voided))
            raise
        except errors.RequestError as e:
            self.journal.finish(key, "failed", {"error": e.code}, self.ctx.now_s())
            raise
        self.journal.finish(key, "done", {"outcome": "approved", "payment_id": payment.payment_id}, self.ctx.now_s(),
                            self._movements(payment))
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
        self.journal.finish(entry.idempotency_key, "done", doc, self.ctx.now_s(), self._answer_movements(kind, doc))
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

    def _close_batch(self, totals: Mapping[str, int] | None, payment_ids: list[str] | None, idempotency_key: str | None,
                     movements: Sequence[Mapping[str, Any] | Movement] | None) -> core.Operation:
        """Close the open batch with every movement the journal recorded since the last close
        (or the caller's `movements`, or the legacy `payment_ids`); the journal's open movements
        go into this close either way, since the gateway closes its batch whole."""
        given = None if movements is None else [m if isinstance(m, Movement) else Movement.from_json(m) for m in movements]

        def document_for(open_movements: list[Movement]) -> dict[str, Any]:
            try:
                return batch.close_document(self.config.store_id, totals, open_movements if given is None else given, payment_ids)
            except ValueError as e:
                raise errors.ValidationError("batch_too_large", f"{e}; close batches more often") from None

        path = f"/v1/terminals/{quote(self.config.terminal_id, safe='')}/batches"
        entry = self.journal.begin_batch(path, document_for, self._new_key("batch"), self.ctx.now_s(), idempotency_key)
        return (yield from self._send_batch(entry))

    def _send_batch(self, entry: JournalEntry) -> core.Operation:
        try:
            doc = yield from core.call(self.ctx, "POST", entry.ref, entry.document, entry.idempotency_key)
        except errors.PosError as error:
            if not core.is_retryable(error):
                self.journal.fail_batch(entry.idempotency_key, {"error": error.code}, self.ctx.now_s())
            raise  # an unknown outcome stays pending: the next close or `resume` sends it again with its key
        self.journal.finish(entry.idempotency_key, "done", doc, self.ctx.now_s())
        return BatchResult.from_json(doc)

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
            self.journal.outbox_sent(entry.id, doc, self._answer_movements(entry.kind, doc), self.ctx.now_s())
            sent.append((entry, doc))
        return sent

    def _resume(self) -> core.Operation:
        """Finish what a crash interrupted: every pending operation is sent again with its own key."""
        outcomes: list[tuple[str, Any]] = []
        for entry in self.journal.unfinished():
            try:
                if entry.kind == "pay":
                    result: Any = yield from self._drive_sale(entry.idempotency_key, entry.document, entry.reversal_key)
                elif entry.kind == "batch":
                    result = yield from self._send_batch(entry)
                else:
                    result = yield from self._write(entry.kind, entry.ref, entry.document, entry.idempotency_key,
                                                    entry.kind == "reversal" or (entry.kind == "refund" and self.config.forward_refunds))
            except errors.PosError as error:
                result = error
            outcomes.append((entry.idempotency_key, result))
        return outcomes
