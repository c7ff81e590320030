"""What schemathesis found in the gateway (tests/e2e/test_schemathesis.py), each pinned by a test of its own."""

from __future__ import annotations

import pytest

from tests.e2e.test_member_wallet import app_call, wallet


async def test_a_405_lists_the_methods_the_route_takes(gateway):
    """A method a route does not take is 405 method_not_allowed with the Allow header RFC 9110 requires."""
    async with gateway.session.request("TRACE", gateway.base_url + "/v1/payments") as response:
        problem = await response.json(content_type=None)
        assert (405, "method_not_allowed", "GET, POST") == (response.status, problem["code"], response.headers.get("Allow"))


@pytest.mark.parametrize("limit", ["²", "9" * 5_000, "-1", ""], ids=["superscript", "5000-digits", "signed", "empty"])
async def test_a_limit_that_is_not_a_plain_number_is_invalid_request(gateway, limit):
    """?limit= in superscript digits, 5,000 digits long, signed or empty is 422 invalid_request, not a 500."""
    member, token = await wallet(gateway)
    for route in ("history", "events", "cashouts"):
        status, problem = await app_call(gateway, "GET", f"/v1/members/{member.member_id}/{route}?limit={limit}", token)
        assert (422, "invalid_request") == (status, problem["code"]), route


@pytest.mark.parametrize("event_id", ["99999999999999999999-0", "18446744073709551615-0", "1-99999999999999999999"])
async def test_an_event_id_past_what_redis_takes_is_invalid_request(gateway, event_id):
    """An offset bigger than a Redis stream id (or the very last one) is 422 invalid_request, not Redis's 500."""
    member, token = await wallet(gateway)
    for query in (f"events?after={event_id}", f"history?before={event_id}"):
        status, problem = await app_call(gateway, "GET", f"/v1/members/{member.member_id}/{query}", token)
        assert (422, "invalid_request") == (status, problem["code"]), query


async def test_a_put_without_its_body_changes_nothing(gateway):
    """PUT settings with no body is 422 invalid_request and the member's limits stay as they were."""
    member, token = await wallet(gateway)
    path = f"/v1/members/{member.member_id}/settings"
    status, _ = await app_call(gateway, "PUT", path, token, {"confirm_over_points": 30_000})
    assert 200 == status
    async with gateway.session.put(gateway.base_url + path, headers={"Authorization": f"Bearer {token}"}) as response:
        assert (422, "invalid_request") == (response.status, (await response.json(content_type=None))["code"])
    status, balance = await app_call(gateway, "GET", f"/v1/members/{member.member_id}", token)
    assert 30_000 == balance["settings"]["confirm_over_points"]
