"""`AsyncPosClient`: the asyncio client, over aiohttp. Same verbs as `PosClient`."""

from __future__ import annotations

import asyncio
from typing import Any, Mapping, Sequence

import aiohttp
from yarl import URL

from pos_sdk import core
from pos_sdk.base import ClientBase
from pos_sdk.batch import Movement
from pos_sdk.journal import OutboxEntry
from pos_sdk.models import BatchResult, Payment, RefundResult, ReversalResult


class AsyncPosClient(ClientBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session: aiohttp.ClientSession | None = None

    async def _run(self, operation: core.Operation) -> Any:
        reply: core.Reply = None
        while True:
            try:
                action = operation.send(reply)
            except StopIteration as done:
                return done.value
            if isinstance(action, core.Sleep):
                await asyncio.sleep(action.seconds)
                reply = None
            else:
                reply = await self._perform(action)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout_s,
                                            sock_read=self.config.read_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        return self._session

    async def _perform(self, request: core.HttpRequest) -> core.HttpResponse | core.TransportFailure:
        # encoded=True: the path goes out exactly as it was signed.
        url = URL(self.config.base + request.path, encoded=True)
        try:
            async with self._client().request(request.method, url, data=request.body or None,
                                              headers=dict(request.headers)) as response:
                body = await response.read()
                return core.HttpResponse(response.status, {k.lower(): v for k, v in response.headers.items()}, body)
        except aiohttp.ClientConnectorError as e:
            return core.TransportFailure("connect", type(e).__name__)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            return core.TransportFailure("timeout", f"no answer in {self.config.read_timeout_s} s")
        except aiohttp.ClientError as e:
            return core.TransportFailure("disconnected", type(e).__name__)

    async def pay(self, code: str, amount: int, order_ref: str, *, currency: str | None = None,
                  coupon_codes: tuple[str, ...] = (), line_items: tuple[Mapping[str, Any], ...] = (),
                  idempotency_key: str | None = None) -> Payment:
        """Sell: approved Payment, or raise Declined, Reversed or ReversalQueued (never unresolved)."""
        return await self._run(self._pay(code, amount, order_ref, currency, coupon_codes, line_items, idempotency_key))

    async def get_payment(self, payment_id: str) -> Payment:
        return await self._run(self._get_payment(payment_id))

    async def find_by_order_ref(self, order_ref: str) -> Payment:
        return await self._run(self._find(order_ref))

    async def cancel(self, payment_id: str, reason: str = "", idempotency_key: str | None = None) -> Payment:
        return await self._run(self._cancel(payment_id, reason, idempotency_key))

    async def refund(self, payment_id: str, amount: int, reason: str = "", idempotency_key: str | None = None) -> RefundResult:
        return await self._run(self._refund(payment_id, amount, reason, idempotency_key))

    async def reverse(self, order_ref: str, reason: str = "", idempotency_key: str | None = None) -> ReversalResult:
        """Reverse by order reference; queued for forwarding if the gateway is unreachable."""
        return await self._run(self._reverse(order_ref, reason, idempotency_key))

    async def close_batch(self, totals: Mapping[str, int] | None = None, payment_ids: list[str] | None = None,
                          idempotency_key: str | None = None, *,
                          movements: Sequence[Mapping[str, Any] | Movement] | None = None) -> BatchResult:
        """Close the open batch and open the next: the gateway reconciles it with every sale, void
        and refund the journal recorded since the last close, and `totals` (`sale_count`,
        `sale_amount`, `void_*`, `refund_*`; by default the movements' own). `movements` replaces
        the journal's; `payment_ids` (deprecated) sends sale ids instead. If an earlier close
        never got its answer, that one is sent again (same key, same movements) and its result
        returned: call again to close the batch after it."""
        return await self._run(self._close_batch(totals, payment_ids, idempotency_key, movements))

    async def flush_outbox(self) -> list[tuple[OutboxEntry, Any]]:
        return await self._run(self._flush())

    def outbox(self) -> list[OutboxEntry]:
        """What is waiting to be forwarded, oldest first."""
        return self.journal.outbox()

    async def resume(self) -> list[tuple[str, Any]]:
        return await self._run(self._resume())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self.journal.close()

    async def __aenter__(self) -> "AsyncPosClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
