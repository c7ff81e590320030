"""`simulators partner`: Taishin as a separate service, with its fault switches."""

from __future__ import annotations

import time

import aiohttp
import pytest

from simulators import partner
from simulators.phone import Phone, PhoneError


async def test_partner_simulator_runs_its_own_network_and_switches_faults(tmp_path):
    """It enrols Taishin members on its own Redis with its own prefix; `down` refuses, `none` serves again."""
    network = await partner.start(tmp_path / "taishin", "http://127.0.0.1:9")
    try:
        phone = await Phone.enrol(network.url)
        code = phone.next_code(time.time())
        network.switch("down")
        with pytest.raises(PhoneError):
            await Phone.enrol(network.url)
        network.switch("none")
        async with aiohttp.ClientSession() as session:
            async with session.get(network.url + "/readyz") as response:
                ready = response.status
    finally:
        await network.close()
    assert ("8860", "TSP", 200) == (code[:4], network.settings.home_network.points_unit, ready)


async def test_decline_everything_switch(tmp_path):
    """Started with decline, a member with points is still declined at FamilyMart (limit_exceeded)."""
    from gateway.app import MERCHANTS
    from pos_sdk import AsyncPosClient, Declined, PosConfig
    from simulators import load

    network = await partner.start(tmp_path / "taishin", "http://127.0.0.1:9", decline_all=True)
    try:
        phone = await Phone.enrol(network.url)
        card = await network.app[MERCHANTS].issue_key("taishin-card")
        async with aiohttp.ClientSession() as session:
            await load.credit_member(session, network.url, (card.key_id, card.secret), phone.member_id, 500, "T-1",
                                     affiliate_id="taishin-card")
        fm = await network.app[MERCHANTS].issue_key("familymart-tw")
        config = PosConfig(network.url, "familymart-tw", "fm-taipei-101", "t1", fm.key_id, fm.secret, currency="TWD",
                           journal_path=str(tmp_path / "fm.sqlite3"))
        async with AsyncPosClient(config) as pos:
            with pytest.raises(Declined) as declined:
                await pos.pay(phone.next_code(time.time()), 100, "FM-DECLINE-1")
        with pytest.raises(ValueError):
            network.switch("decline")  # chosen at start, not switched at run time
    finally:
        await network.close()
    assert "limit_exceeded" == declined.value.decline_code
