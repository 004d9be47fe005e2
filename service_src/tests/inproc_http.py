"""The HTTP contract in process (payment-api.md, README.md "Routes"): the real Flask app and
Service driven by `app.test_client()`, the network faked (inproc.World: gateway, User, Cart,
broker). Routes, status codes, JSON bodies, headers; every error a JSON body, never a 500.
No RabbitMQ, no uWSGI, no socket (the `offline` fixture fails any connect): runs alone with
`pytest service_src/tests/inproc_*`. The same contract against uWSGI and the real broker:
test_contract.py, test_errors.py, test_idempotency.py, test_fuzz.py."""

from __future__ import annotations

import copy
import json
import urllib.parse
import uuid
from typing import Any

import pytest
from conftest import CART, METRICS_SUMMARY_KEYS
from hypothesis import HealthCheck, given, settings
from inproc import (
    World,
    offline,  # noqa: F401  (a fixture, used by pytestmark)
)
from payment.service import fingerprint
from test_errors import INVALID_CARTS
from test_fuzz import bodies, ids
from werkzeug.test import TestResponse

pytestmark = pytest.mark.usefixtures("offline")


def assert_error(reply: TestResponse, status: int, **body: Any) -> dict[str, Any]:
    """A JSON error: {"status": "error", "message": "...", ...}; `body` = fields it must have."""
    assert reply.status_code == status, reply.get_data()
    assert reply.mimetype == "application/json"
    data = reply.get_json()
    assert data["status"] == "error"
    assert isinstance(data["message"], str) and data["message"]
    for name, value in body.items():
        assert data[name] == value, (name, data)
    return data


def nothing_charged(world: World) -> None:
    assert world.deps.gateway.calls == []
    assert world.deps.deleted == []
    assert world.broker.queue == []


def post(world: World, path: str, body: Any = None, **headers: str) -> TestResponse:
    raw = body if isinstance(body, bytes) else json.dumps(CART if body is None else body)
    return world.client.post(
        path, data=raw, headers={"Content-Type": "application/json", **headers}
    )


# -- POST /pay/<id> -----------------------------------------------------------------------
def test_anonymous_payment() -> None:
    world = World()
    reply = post(world, "/pay/anonymous-42", **{"X-Request-ID": "req-anon-42"})
    assert reply.status_code == 200, reply.get_data()
    assert reply.mimetype == "application/json"
    orderid = reply.get_json()["orderid"]
    assert str(uuid.UUID(orderid, version=4)) == orderid
    assert reply.get_json() == {"orderid": orderid}
    assert reply.headers["X-Request-ID"] == "req-anon-42"
    assert "Idempotent-Replayed" not in reply.headers
    assert world.deps.gateway.charged == ["req-anon-42"]
    assert world.deps.history == []  # anonymous: no order history
    assert world.deps.deleted == ["anonymous-42"]
    order = {"orderid": orderid, "user": "anonymous-42", "cart": CART}
    assert world.broker.queue == [(orderid, order)]


def test_registered_user_gets_order_history() -> None:
    world = World()
    reply = post(world, "/pay/stan")
    assert reply.status_code == 200
    orderid = reply.get_json()["orderid"]
    assert [json.loads(h) for h in world.deps.history] == [{"orderid": orderid, "cart": CART}]
    assert world.deps.deleted == ["stan"]
    assert [body["user"] for _, body in world.broker.queue] == ["stan"]


def test_json_with_charset_is_accepted() -> None:
    world = World()
    reply = post(world, "/pay/anonymous-1", **{"Content-Type": "application/json;charset=UTF-8"})
    assert reply.status_code == 200, reply.get_data()


@pytest.mark.parametrize("rid", [None, "", "bad id", "x" * 129, "a/b", "é"])
def test_a_missing_or_invalid_request_id_is_replaced(rid: str | None) -> None:
    world = World()
    headers = {} if rid is None else {"X-Request-ID": rid}
    reply = post(world, "/pay/anonymous-1", **headers)
    assert reply.status_code == 200
    new = reply.headers["X-Request-ID"]
    assert new != rid and len(new) == 32 and int(new, 16) >= 0  # a fresh uuid4 hex
    assert world.deps.gateway.charged == [new]  # and that one goes to the dependencies


def test_a_valid_request_id_is_kept_on_every_answer() -> None:
    world = World()
    rid = "Req-1.2_3:4"
    for reply in (
        post(world, "/pay/anonymous-1", **{"X-Request-ID": rid}),
        post(world, "/pay/anonymous-1", {"total": 0}, **{"X-Request-ID": rid}),
        world.client.get("/nope", headers={"X-Request-ID": rid}),
        world.client.get("/health", headers={"X-Request-ID": rid}),
    ):
        assert reply.headers["X-Request-ID"] == rid


def test_same_key_replays_the_answer() -> None:
    world = World()
    first = post(world, "/pay/stan", **{"Idempotency-Key": "k1"})
    again = post(world, "/pay/stan", **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    other_user = post(world, "/pay/anonymous-1", **{"Idempotency-Key": "k1"})  # keys per user
    assert other_user.status_code == 200
    assert other_user.get_json() != first.get_json()
    assert len(world.deps.gateway.charged) == 2


def test_same_key_other_body_is_422() -> None:
    world = World()
    assert post(world, "/pay/stan", **{"Idempotency-Key": "k1"}).status_code == 200
    other = copy.deepcopy(CART)
    other["items"][0]["qty"] = 2
    reply = post(world, "/pay/stan", other, **{"Idempotency-Key": "k1"})
    assert_error(reply, 422, message="Idempotency-Key already used with another request")
    assert len(world.deps.gateway.charged) == 1


def test_409_carries_retry_after() -> None:  # from test_money.py, plus the body
    world = World()
    store = world.service.idempotency
    store.begin("stan k1", fingerprint("stan", CART))  # another request holds the key
    reply = world.pay("stan", key="k1")
    assert reply.status == 409
    assert int(reply.headers["Retry-After"]) >= 1
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.body == {
        "status": "error",
        "message": "a request with this Idempotency-Key is in progress",
    }
    nothing_charged(world)


# -- 4xx: every refusal before anything is called ---------------------------------------------
@pytest.mark.parametrize("cart", INVALID_CARTS, ids=range(len(INVALID_CARTS)))
def test_invalid_cart_is_400(cart: Any) -> None:
    world = World()
    raw = cart if isinstance(cart, bytes) else json.dumps(cart).encode()
    body = assert_error(post(world, "/pay/anonymous-1", raw), 400, message="cart not valid")
    assert isinstance(body["detail"], str) and body["detail"]
    nothing_charged(world)


@pytest.mark.parametrize(
    "raw", [b"{", b"", b"NaN", b'{"total": NaN}', b'{"total": Infinity}', b"\xff\xfe"]
)
def test_body_not_json_is_400(raw: bytes) -> None:
    world = World()
    assert_error(post(world, "/pay/anonymous-1", raw), 400, message="cart not valid")
    nothing_charged(world)


@pytest.mark.parametrize("user", ["a" * 65, "-lead", "bad%20id", "%C3%A9", "a%3Bb", ".hidden"])
def test_invalid_id_is_400(user: str) -> None:
    world = World()
    assert_error(post(world, f"/pay/{user}"), 400, message="invalid id")
    nothing_charged(world)


@pytest.mark.parametrize("key", ["x" * 300, "", "a b", "k\u00e9"])
def test_invalid_idempotency_key_is_400(key: str) -> None:
    world = World()
    reply = post(world, "/pay/stan", **{"Idempotency-Key": key})
    assert_error(reply, 400, message="invalid Idempotency-Key")
    nothing_charged(world)


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_not_json_content_type_is_415(ctype: str | None) -> None:
    world = World()
    headers = {"Content-Type": ctype} if ctype else {}
    reply = world.client.post("/pay/anonymous-1", data=json.dumps(CART), headers=headers)
    assert_error(reply, 415, message="Content-Type must be application/json")
    nothing_charged(world)


def test_body_too_large_is_413() -> None:
    world = World(settings={"max_body": 2048})
    big = copy.deepcopy(CART)
    big["padding"] = "x" * 4096
    reply = post(world, "/pay/anonymous-1", big)
    assert_error(reply, 413, message="request body larger than 2048 bytes")
    nothing_charged(world)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("GET", "/pay"), ("POST", "/pay/"), ("POST", "/pay/a/b"), ("GET", "/")],
)
def test_unknown_route_is_404(method: str, path: str) -> None:
    world = World()
    reply = world.client.open(path, method=method, json=CART)
    assert_error(reply, 404, message="not found")
    nothing_charged(world)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/pay/anonymous-1", "POST"),
        ("DELETE", "/pay/anonymous-1", "POST"),
        ("POST", "/health", "GET"),
        ("PUT", "/health/live", "GET"),
        ("POST", "/metrics", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(method: str, path: str, allowed: str) -> None:
    world = World()
    reply = world.client.open(path, method=method, json={})
    assert_error(reply, 405, message="method not allowed")
    assert allowed in reply.headers["Allow"].split(", ")
    nothing_charged(world)


# -- 5xx: a dependency down, never a 500 -----------------------------------------------------
def test_user_service_down_is_503_before_any_charge() -> None:
    world = World()
    world.deps.user_down = True
    reply = post(world, "/pay/stan")
    assert reply.get_json() == {
        "status": "error",
        "message": "user service unavailable",
        "dependency": "user",
        "reason": "refused",
    }
    assert reply.status_code == 503
    nothing_charged(world)


@pytest.mark.parametrize(
    ("mode", "status", "body"),
    [
        ("decline", 502, {"message": "payment declined by the gateway"}),
        ("refuse", 503, {"message": "payment gateway unavailable", "reason": "refused"}),
        (
            "timeout",
            504,
            {"message": "payment gateway did not answer; the charge state is unknown"},
        ),
    ],
)
def test_gateway_failures(mode: str, status: int, body: dict[str, str]) -> None:
    world = World()
    world.deps.gateway.mode = mode
    reply = post(world, "/pay/anonymous-1")
    assert reply.status_code == status
    assert reply.get_json() == {"status": "error", "dependency": "gateway", **body}
    assert world.deps.deleted == [] and world.broker.queue == []  # no order, cart kept


def test_idempotency_store_down_is_503() -> None:
    world = World()

    def down(*_a: Any) -> Any:
        raise OSError("disk gone")

    world.service.idempotency.begin = down
    reply = post(world, "/pay/stan", **{"Idempotency-Key": "k1"})
    assert_error(reply, 503, dependency="idempotency")
    nothing_charged(world)


def test_an_unexpected_error_is_a_json_500() -> None:
    """The last resort of the error handlers (no client input reaches it: test_fuzz_*)."""
    world = World()

    def bug() -> Any:
        raise RuntimeError("a bug")

    world.service.health = bug
    assert_error(world.client.get("/health"), 500, message="internal error")


settings_fuzz = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ: dict[str, World] = {}


@settings_fuzz
@given(user=ids, body=bodies)
def test_fuzz_never_5xx_in_process(user: str, body: Any) -> None:
    """test_fuzz.py's bodies and ids: a 200 publishes one order, anything else is a JSON 4xx
    that charges and publishes nothing."""
    world = FUZZ.setdefault("world", World(name="fuzz"))
    if isinstance(body, dict) and set(body) == {"raw"} and isinstance(body["raw"], bytes):
        raw = body["raw"]
    else:
        raw = json.dumps(body).encode()
    charged, queued = len(world.deps.gateway.calls), len(world.broker.queue)
    reply = post(world, "/pay/" + urllib.parse.quote(user, safe=""), raw)
    assert reply.status_code < 500, (reply.status_code, reply.get_data())
    if reply.status_code == 200:
        assert [m["orderid"] for _, m in world.broker.queue[queued:]] == [
            reply.get_json()["orderid"]
        ]
    else:
        assert_error(reply, reply.status_code)
        assert reply.status_code in (400, 404, 405, 413, 415), reply.status_code
        assert len(world.broker.queue) == queued  # a rejected request publishes nothing
        assert len(world.deps.gateway.calls) == charged  # and charges nothing


# -- GET /health/live, /health, /metrics ------------------------------------------------------
def test_liveness() -> None:
    reply = World().client.get("/health/live")
    assert reply.status_code == 200
    assert reply.mimetype == "application/json"
    assert reply.get_json() == {"status": "ok"}


def test_health_ready() -> None:
    reply = World().client.get("/health")
    assert reply.status_code == 200
    assert reply.get_json() == {
        "status": "ok",
        "cart": "connected",
        "user": "connected",
        "rabbitmq": "connected",
        "rabbitmq_host": "fake-broker",
        "outbox": {"pending": 0, "writable": True},
        "payments": {"unknown": 0},
        "idempotency": {"backend": "sqlite", "state": "connected"},
    }


@pytest.mark.parametrize(("require", "status"), [(None, 503), (True, 503), (False, 200)])
def test_health_with_the_broker_down(require: bool | None, status: int) -> None:
    """PAYMENT_HEALTH_REQUIRE_BROKER: true by default (as the role sets it); false keeps the
    host ready while orders wait as `charged` records."""
    overrides = {} if require is None else {"health_require_broker": require}
    world = World(settings=overrides)
    world.broker.mode = "down"
    assert post(world, "/pay/anonymous-1").status_code == 200  # taken all the same
    reply = world.client.get("/health")
    assert reply.status_code == status
    body = reply.get_json()
    assert body["status"] == ("ok" if status == 200 else "unavailable")
    assert body["rabbitmq"] == "disconnected" and body["rabbitmq_host"] is None
    assert body["outbox"] == {"pending": 1, "writable": True}


@pytest.mark.parametrize(("down", "status"), [("user", 503), ("cart", 200)])
def test_health_with_a_dependency_down(down: str, status: int) -> None:
    world = World()
    world.deps.probe = lambda dependency: dependency != down  # type: ignore[method-assign]
    reply = world.client.get("/health")
    assert reply.status_code == status
    assert reply.get_json()[down] == "disconnected"


def metric(text: str, name: str) -> float:
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if not line.startswith("#") and line.rpartition(" ")[0] == name
    )


def test_metrics_text_and_json_summary() -> None:
    world = World()
    success = 'payments_total{result="success"}'
    before = metric(world.client.get("/metrics").get_data(as_text=True), success)
    assert post(world, "/pay/anonymous-1").status_code == 200
    assert post(world, "/pay/anonymous-1", {"total": 0}).status_code == 400
    reply = world.client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    text = reply.get_data(as_text=True)
    assert metric(text, success) == before + 1
    assert 'payments_total{result="invalid"}' in text
    assert 'payment_records{state="charged"} 0.0' in text
    summary = world.client.get("/metrics", headers={"Accept": "application/json"})
    assert summary.status_code == 200 and summary.mimetype == "application/json"
    data = summary.get_json()
    assert set(data) >= METRICS_SUMMARY_KEYS
    assert data["successful_payments"] >= 1 and data["failed_payments"] >= 1


# -- the log ----------------------------------------------------------------------------------
def test_one_json_log_line_per_request(capfd: pytest.CaptureFixture[str]) -> None:
    world = World()
    capfd.readouterr()
    post(world, "/pay/anonymous-log", **{"X-Request-ID": "log-1"})
    post(world, "/pay/anonymous-log", {"total": 0}, **{"X-Request-ID": "log-2"})
    world.client.get("/nope", headers={"X-Request-ID": "log-3"})
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    requests = [line for line in lines if line.get("msg") == "request"]
    assert [(r["request_id"], r["method"], r["path"], r["status"]) for r in requests] == [
        ("log-1", "POST", "/pay/anonymous-log", 200),
        ("log-2", "POST", "/pay/anonymous-log", 400),
        ("log-3", "GET", "/nope", 404),
    ]
    assert requests[0]["orderid"] == world.broker.queue[0][0]
    assert requests[1]["error"] == "cart not valid"
    assert requests[2]["error"] == "not found"
    assert all(isinstance(r["ms"], float) for r in requests)
    assert not any("HAL-1" in json.dumps(line) for line in lines)  # no cart content
