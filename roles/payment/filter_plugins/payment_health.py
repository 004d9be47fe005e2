"""What the payment role calls ready, in one place: a registered ansible.builtin.uri result of
GET /health that answered 200 with the broker connected (a body without a `rabbitmq` field
counts as connected). A skipped or missing result is not ready.

    {{ _payment_ready | payment_ready }}
"""

from __future__ import annotations

from collections.abc import Mapping


def payment_ready(result: object) -> bool:
    if not isinstance(result, Mapping) or result.get("status") != 200:
        return False
    body = result.get("json")
    return not isinstance(body, Mapping) or body.get("rabbitmq", "connected") == "connected"


class FilterModule:
    def filters(self):
        return {"payment_ready": payment_ready}
