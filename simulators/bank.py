"""`simulators bank`: the wallet's bank, which pays cash-outs into members' accounts.

We do not run the bank, so it is a simulator that speaks real HTTP, the way a
bank's payout API does:

    POST /v1/transfers             {transfer_id, amount, currency, account: {bank_code, account_number, holder_name}}
                                   -> 201 {transfer_id, state: completed | rejected, reason?, amount, currency, completed_at}
    GET  /v1/transfers/{id}        -> 200 the same, or 404 if the bank never received it

Both take `Authorization: Bearer <api key>`. A transfer is idempotent by its
id: the same id again answers the recorded result (`Idempotent-Replayed:
true`) and never pays twice; the same id with another body is 409. Bad input
is 400 problem+json and records nothing.

Faults, for tests and the demo (`POST /_control {"mode": ..., "times": n}`,
or the constructor), each for the next `times` transfer requests or until
changed:

    ok        answer at once
    reject    refuse new transfers (`reason`, default `account_closed`)
    slow      record and pay the transfer, answer only after `delay_s`: the caller times out
              and has to find the outcome by lookup
    drop      the request is lost before the bank records it: the connection closes, a lookup says 404
    down      503 to everything

Accounts listed as closed are always refused with `account_closed`.
`GET /_state` (or `Bank.paid_to`, `Bank.transfers`) shows what was paid, so
a test can prove money left exactly once. Account numbers never go to a log.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hmac
import signal
import sys
import time
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Iterable, Sequence

import msgspec
from aiohttp import web

MODES = ("ok", "reject", "slow", "drop", "down")
DEMO_API_KEY = "pgbank-demo-0123456789abcdef"  # the simulator's key; a real bank issues its own
SLOW_DELAY_S = 3.0  # longer than the gateway's default bank_timeout_s
REJECT_REASON = "account_closed"
TRANSFERS_MAX = 100_000  # a simulator keeps everything in memory; refuse rather than grow without end
BODY_BYTES_MAX = 4096  # a transfer request is about 200 bytes


class Account(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    bank_code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{3}$")]
    account_number: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,20}$")]
    holder_name: Annotated[str, msgspec.Meta(min_length=1, max_length=60, pattern=r"^[^\x00-\x1f\x7f]+$")]


class TransferRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    transfer_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    amount: Annotated[int, msgspec.Meta(gt=0, le=10**12)]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    account: Account


class Control(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    mode: str
    times: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    reason: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$")] | None = None
    delay_s: Annotated[float, msgspec.Meta(ge=0, le=60)] | None = None


@dataclass
class Transfer:
    request: TransferRequest
    state: str
    reason: str | None
    completed_at: str

    def answer(self) -> dict[str, Any]:
        answer = {"transfer_id": self.request.transfer_id, "state": self.state, "amount": self.request.amount,
                  "currency": self.request.currency, "completed_at": self.completed_at}
        if self.reason:
            answer["reason"] = self.reason
        return answer


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _problem(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"type": f"https://bank.example/problems/{code}", "title": code.replace("_", " "),
                              "status": status, "code": code, "detail": detail},
                             status=status, content_type="application/problem+json")


class Bank:
    """The bank: an aiohttp app, its transfers in memory, and the fault switch.

    `async with Bank(...) as bank:` serves it on a free loopback port (`bank.url`).
    """

    def __init__(self, api_key: str = DEMO_API_KEY, closed_accounts: Iterable[str] = (), mode: str = "ok",
                 slow_delay_s: float = SLOW_DELAY_S, now: Callable[[], float] = time.time) -> None:
        self.api_key = api_key
        self.closed_accounts = set(closed_accounts)
        self.slow_delay_s = slow_delay_s
        self.now = now
        self.transfers: dict[str, Transfer] = {}
        self.requests: list[tuple[str, str]] = []
        """(method, transfer id) of every transfer request that reached the bank, lost ones included."""
        self.mode, self.times, self.reason = "ok", None, REJECT_REASON
        self.set_mode(mode)
        self.app = web.Application(client_max_size=BODY_BYTES_MAX)
        self.app.router.add_post("/v1/transfers", self._create)
        self.app.router.add_get("/v1/transfers/{transfer_id}", self._get)
        self.app.router.add_post("/_control", self._control)
        self.app.router.add_get("/_state", self._state)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- what tests and the demo use --------------------------------------------

    def set_mode(self, mode: str, times: int | None = None, reason: str | None = None, delay_s: float | None = None) -> None:
        """Switch the fault mode for the next `times` transfer requests (None: until switched again)."""
        if mode not in MODES:
            raise ValueError(f"mode is one of {', '.join(MODES)}, not {mode!r}")
        self.mode, self.times = mode, times
        self.reason = reason or REJECT_REASON
        if delay_s is not None:
            self.slow_delay_s = delay_s

    def paid_to(self, bank_code: str, account_number: str) -> int:
        """Everything paid into one account, in minor units."""
        return sum(t.request.amount for t in self.transfers.values() if t.state == "completed"
                   and (t.request.account.bank_code, t.request.account.account_number) == (bank_code, account_number))

    @property
    def paid_total(self) -> int:
        return sum(t.request.amount for t in self.transfers.values() if t.state == "completed")

    def state(self) -> dict[str, Any]:
        paid: dict[str, int] = {}
        for t in self.transfers.values():
            if t.state == "completed":
                account = f"{t.request.account.bank_code}-{t.request.account.account_number}"
                paid[account] = paid.get(account, 0) + t.request.amount
        return {"mode": self.mode, "times": self.times, "paid_total": self.paid_total, "paid_by_account": paid,
                "transfers": [t.answer() for t in self.transfers.values()], "requests": len(self.requests)}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "Bank":
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "Bank":
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the fault switch ---------------------------------------------------------

    def _take_mode(self) -> str:
        """The mode this transfer request meets; a mode set for `times` requests wears off after them."""
        mode = self.mode
        if self.times is not None:
            self.times -= 1
            if self.times <= 0:
                self.mode, self.times = "ok", None
        return mode

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(key.encode(), self.api_key.encode())

    # -- handlers -----------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "down":
            self._take_mode()
            return _problem(503, "unavailable", "the bank is down for maintenance")
        if not self._authorised(request):
            return _problem(401, "unauthorized", "send Authorization: Bearer <your API key>")
        try:
            transfer = msgspec.json.decode(await request.read(), type=TransferRequest)
        except msgspec.ValidationError as e:
            return _problem(400, "invalid_request", str(e))
        except msgspec.DecodeError as e:
            return _problem(400, "invalid_json", str(e))
        self.requests.append(("POST", transfer.transfer_id))
        mode = self._take_mode()
        if mode == "drop":
            # Lost before the bank recorded anything: the caller sees the connection close.
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # nothing is written back on a connection that is gone
        known = self.transfers.get(transfer.transfer_id)
        if known is not None:
            if known.request != transfer:
                return _problem(409, "transfer_id_in_use", "this transfer id was used for a different transfer")
            response = web.json_response(known.answer(), status=201)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        if len(self.transfers) >= TRANSFERS_MAX:
            return _problem(503, "unavailable", "the simulator holds as many transfers as it keeps")
        if transfer.currency != "KRW":
            return _problem(400, "currency_not_supported", "this bank pays KRW only")
        if transfer.account.account_number in self.closed_accounts:
            recorded = Transfer(transfer, "rejected", "account_closed", _iso(self.now()))
        elif mode == "reject":
            recorded = Transfer(transfer, "rejected", self.reason, _iso(self.now()))
        else:
            recorded = Transfer(transfer, "completed", None, _iso(self.now()))
        self.transfers[transfer.transfer_id] = recorded
        if mode == "slow":
            # The transfer is done; only the answer is late.
            await asyncio.sleep(self.slow_delay_s)
        return web.json_response(recorded.answer(), status=201)

    async def _get(self, request: web.Request) -> web.Response:
        if self.mode == "down":
            return _problem(503, "unavailable", "the bank is down for maintenance")
        if not self._authorised(request):
            return _problem(401, "unauthorized", "send Authorization: Bearer <your API key>")
        transfer_id = request.match_info["transfer_id"]
        self.requests.append(("GET", transfer_id))
        known = self.transfers.get(transfer_id)
        if known is None:
            return _problem(404, "transfer_not_found", "the bank never received this transfer")
        return web.json_response(known.answer())

    async def _control(self, request: web.Request) -> web.Response:
        try:
            control = msgspec.json.decode(await request.read(), type=Control)
            self.set_mode(control.mode, control.times, control.reason, control.delay_s)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as e:
            return _problem(400, "invalid_request", str(e))
        return web.json_response({"mode": self.mode, "times": self.times})

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simulators bank", description="play the wallet's bank (cash-out payouts)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091, help="where the bank listens")
    parser.add_argument("--api-key", default=DEMO_API_KEY, help="the key the gateway sends (POINTGATE_BANK_API_KEY)")
    parser.add_argument("--closed", action="append", default=[], metavar="ACCOUNT_NUMBER",
                        help="an account number the bank refuses as closed (repeatable)")
    parser.add_argument("--mode", choices=MODES, default="ok", help="the fault mode at start (POST /_control changes it)")
    parser.add_argument("--slow-delay-s", type=float, default=SLOW_DELAY_S, help="how late a slow answer comes")
    args = parser.parse_args(argv)

    async def run() -> None:
        bank = await Bank(args.api_key, args.closed, args.mode, args.slow_delay_s).start(args.host, args.port)
        print(f"bank: listening on {bank.url} (mode {args.mode}, {len(args.closed)} closed account(s))")
        print(f"bank: run the gateway with POINTGATE_BANK_URL={bank.url} POINTGATE_BANK_API_KEY=<the --api-key>", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await bank.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
