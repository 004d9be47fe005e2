"""The Idempotency-Key records in Redis, shared by every payment host (`payment:idem:<key>`).

A key's value is JSON: `{"fp", "state", "token", ...}` with state
- `in_flight`: claimed (`SET NX` semantics), expires after the lease;
- `charging`: the claim's owner is about to call the gateway (`orderid`, `host`, `since` in
  the Redis server's clock); kept for the TTL, so no host can claim the key again: the
  payment records are per host, only this marker tells another host that money may have
  moved;
- `done`: the stored answer (`status`, `body`), kept for the TTL.
Every transition is one Lua script (atomic in Redis): a claim becomes `charging` only while
its token is still the key's in-flight claim; `finish` and `abort` never touch another
request's claim or marker. Redis must keep its data across a restart (AOF) for the marker to
hold after one.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from .idempotency import CHARGING, IN_FLIGHT, MISMATCH, PROCEED, REPLAY, Outcome, new_token

# KEYS[1]; ARGV: claim JSON, lease. {1} claimed; else {0, value, server seconds, micros}
BEGIN = """
local v = redis.call('GET', KEYS[1])
if not v then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    return {1}
end
local t = redis.call('TIME')
return {0, v, t[1], t[2]}
"""

# KEYS[1]; ARGV: token, orderid, host, ttl. 1 = marked, 0 = the claim is not ours any more
MARK_CHARGING = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local r = cjson.decode(v)
if r['state'] ~= 'in_flight' or r['token'] ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
r['state'] = 'charging'
r['orderid'] = ARGV[2]
r['host'] = ARGV[3]
r['since'] = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('SET', KEYS[1], cjson.encode(r), 'EX', ARGV[4])
return 1
"""

# KEYS[1]; ARGV: token, record JSON, ttl. Written when the key is ours or gone.
FINISH = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['token'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

# KEYS[1]; ARGV: token. Delete the key only while it is still our in-flight claim.
ABORT = """
local v = redis.call('GET', KEYS[1])
if v then
    local r = cjson.decode(v)
    if r['state'] == 'in_flight' and r['token'] == ARGV[1] then
        return redis.call('DEL', KEYS[1])
    end
end
return 0
"""


class RedisStore:
    def __init__(self, url: str, ttl: int, lease: int) -> None:
        import redis  # only needed with this backend

        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30
        )
        self.ttl = ttl
        self.lease = lease
        self.host = socket.gethostname()
        self._begin = self.client.register_script(BEGIN)
        self._charging = self.client.register_script(MARK_CHARGING)
        self._finish = self.client.register_script(FINISH)
        self._abort = self.client.register_script(ABORT)

    @staticmethod
    def _key(key: str) -> str:
        return f"payment:idem:{key}"

    def begin(self, key: str, fingerprint: str) -> Outcome:
        token = new_token()
        claim = json.dumps({"fp": fingerprint, "state": "in_flight", "token": token})
        reply: list[Any] = self._begin(keys=[self._key(key)], args=[claim, self.lease])
        if int(reply[0]) == 1:
            return Outcome(PROCEED, token=token)
        record = json.loads(reply[1])
        now = int(reply[2]) + int(reply[3]) / 1e6
        if record.get("fp") != fingerprint:
            return Outcome(MISMATCH)
        state = record.get("state")
        if state == "in_flight":
            return Outcome(IN_FLIGHT)
        if state == "charging":
            age = max(now - float(record.get("since", 0.0)), 0.0)
            return Outcome(
                CHARGING,
                orderid=str(record.get("orderid", "")),
                age=age,
                host=str(record.get("host", "")),
            )
        return Outcome(REPLAY, int(record["status"]), record["body"])

    def charging(self, key: str, token: str, orderid: str) -> bool:
        marked = self._charging(keys=[self._key(key)], args=[token, orderid, self.host, self.ttl])
        return int(marked) == 1

    def finish(self, key: str, token: str, fingerprint: str, status: int, body: str) -> None:
        record = {"fp": fingerprint, "state": "done", "token": token, "status": status}
        record["body"] = body
        self._finish(keys=[self._key(key)], args=[token, json.dumps(record), self.ttl])

    def abort(self, key: str, token: str) -> None:
        self._abort(keys=[self._key(key)], args=[token])

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False
