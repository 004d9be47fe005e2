"""Hypothesis fuzz of bodies and ids: never a 5xx, always a JSON error, and no message for a
rejected request."""

from __future__ import annotations

import copy
import json
import urllib.parse
from typing import Any

from conftest import CART, Payment, Stubs, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.integers(min_value=-(10**400), max_value=10**400),  # beyond float range
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
item_values = st.fixed_dictionaries(
    {},
    optional={
        "sku": st.one_of(st.just("SHIP"), st.text(max_size=10), scalars),
        "qty": st.one_of(st.integers(min_value=-3, max_value=5), scalars),
        "price": scalars,
        "subtotal": scalars,
        "name": scalars,
    },
)
carts = st.fixed_dictionaries(
    {},
    optional={
        "total": st.one_of(st.floats(min_value=-10, max_value=1e6), scalars),
        "tax": scalars,
        "items": st.one_of(st.lists(item_values, max_size=4), json_values),
    },
)


@st.composite
def mutated_carts(draw: st.DrawFn) -> Any:
    cart = copy.deepcopy(CART)
    target = draw(st.sampled_from(["total", "tax", "items", "item", "drop"]))
    if target == "item":
        item = draw(st.sampled_from(cart["items"]))
        item[draw(st.sampled_from(["sku", "qty", "price", "subtotal"]))] = draw(json_values)
    elif target == "drop":
        del cart[draw(st.sampled_from(["total", "items"]))]
    else:
        cart[target] = draw(json_values)
    return cart


bodies = st.one_of(
    carts,
    mutated_carts(),
    json_values,
    st.binary(max_size=64).map(lambda b: {"raw": b}),
)
ids = st.one_of(
    st.text(min_size=1, max_size=80),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,70}", fullmatch=True),
    st.sampled_from(["anonymous-1", "stan", "a" * 64, "a" * 65]),
)

RESULTS = {"accepted": 0}


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(user=ids, body=bodies)
def test_fuzz_never_5xx(payment: Payment, fresh_stubs: Stubs, user: str, body: Any) -> None:
    if isinstance(body, dict) and set(body) == {"raw"} and isinstance(body["raw"], bytes):
        raw = body["raw"]
    else:
        raw = json.dumps(body).encode()
    path = "/pay/" + urllib.parse.quote(user, safe="")
    before = fresh_stubs.gateway.calls()
    reply = request(payment.port, "POST", path, raw, {"Content-Type": "application/json"})
    assert reply.status < 500, (reply.status, reply.raw)
    messages = payment.messages()
    if reply.status == 200:
        RESULTS["accepted"] += 1
        assert [m["orderid"] for _, m in messages] == [reply.json["orderid"]]
    else:
        assert reply.status in (400, 404, 405, 413, 415), reply.status
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json["status"] == "error"
        assert messages == []  # a rejected request publishes nothing
        assert fresh_stubs.gateway.calls() == before  # and charges nothing
