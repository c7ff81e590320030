"""`PosClient`: the synchronous client, for POS programs that are not async.

No event loop is needed: requests go through the standard library's
http.client, one connection per request, with the configured connect and
read timeouts.
"""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from pos_sdk import core
from pos_sdk.base import ClientBase
from pos_sdk.batch import Movement
from pos_sdk.journal import OutboxEntry
from pos_sdk.models import BatchResult, Payment, RefundResult, ReversalResult


class PosClient(ClientBase):
    def _run(self, operation: core.Operation) -> Any:
        reply: core.Reply = None
        while True:
            try:
                action = operation.send(reply)
            except StopIteration as done:
                return done.value
            if isinstance(action, core.Sleep):
                time.sleep(action.seconds)
                reply = None
            else:
                reply = self._perform(action)

    def _perform(self, request: core.HttpRequest) -> core.HttpResponse | core.TransportFailure:
        parts = urlsplit(self.config.base)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(parts.hostname, parts.port, timeout=self.config.connect_timeout_s)
        try:
            try:
                connection.connect()
            except OSError as e:
                return core.TransportFailure("connect", type(e).__name__)
            connection.sock.settimeout(self.config.read_timeout_s)
            try:
                connection.request(request.method, request.path, body=request.body or None, headers=dict(request.headers))
                response = connection.getresponse()
                body = response.read()
            except socket.timeout:
                return core.TransportFailure("timeout", f"no answer in {self.config.read_timeout_s} s")
            except (OSError, http.client.HTTPException) as e:
                return core.TransportFailure("disconnected", type(e).__name__)
            return core.HttpResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        finally:
            connection.close()

    def pay(self, code: str, amount: int, order_ref: str, *, currency: str | None = None,
            coupon_codes: tuple[str, ...] = (), line_items: tuple[Mapping[str, Any], ...] = (),
            idempotency_key: str | None = None) -> Payment:
        """Sell: approved Payment, or raise Declined, Reversed or ReversalQueued (never unresolved)."""
        return self._run(self._pay(code, amount, order_ref, currency, coupon_codes, line_items, idempotency_key))

    def get_payment(self, payment_id: str) -> Payment:
        return self._run(self._get_payment(payment_id))

    def find_by_order_ref(self, order_ref: str) -> Payment:
        return self._run(self._find(order_ref))

    def cancel(self, payment_id: str, reason: str = "", idempotency_key: str | None = None) -> Payment:
        return self._run(self._cancel(payment_id, reason, idempotency_key))

    def refund(self, payment_id: str, amount: int, reason: str = "", idempotency_key: str | None = None) -> RefundResult:
        return self._run(self._refund(payment_id, amount, reason, idempotency_key))

    def reverse(self, order_ref: str, reason: str = "", idempotency_key: str | None = None) -> ReversalResult:
        """Reverse by order reference; queued for forwarding if the gateway is unreachable."""
        return self._run(self._reverse(order_ref, reason, idempotency_key))

    def close_batch(self, totals: Mapping[str, int] | None = None, payment_ids: list[str] | None = None,
                    idempotency_key: str | None = None, *,
                    movements: Sequence[Mapping[str, Any] | Movement] | None = None) -> BatchResult:
        """Close the open batch and open the next: the gateway reconciles it with every sale, void
        and refund the journal recorded since the last close, and `totals` (`sale_count`,
        `sale_amount`, `void_*`, `refund_*`; by default the movements' own). `movements` replaces
        the journal's; `payment_ids` (deprecated) sends sale ids instead. If an earlier close
        never got its answer, that one is sent again (same key, same movements) and its result
        returned: call again to close the batch after it."""
        return self._run(self._close_batch(totals, payment_ids, idempotency_key, movements))

    def flush_outbox(self) -> list[tuple[OutboxEntry, Any]]:
        return self._run(self._flush())

    def outbox(self) -> list[OutboxEntry]:
        """What is waiting to be forwarded, oldest first."""
        return self.journal.outbox()

    def resume(self) -> list[tuple[str, Any]]:
        return self._run(self._resume())

    def close(self) -> None:
        self.journal.close()

    def __enter__(self) -> "PosClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
