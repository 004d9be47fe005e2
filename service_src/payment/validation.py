"""Checks on what a client sends: the path id, the Idempotency-Key, the request id, the cart.

Everything a payment forwards (to User, Cart, the gateway or the broker) passes these checks
first, and they run before any money moves: a cart accepted here can be counted, summed and
serialized as strict JSON without raising. Patterns are matched in full (`re.fullmatch`:
`$` would accept a trailing newline).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_ITEMS = 1000
MAX_SKU = 128
MAX_QTY = 100_000  # units of one item in one cart
MAX_AMOUNT = 1e12  # total, tax, price, subtotal
MAX_INT = 2**53  # any integer anywhere (exact in every JSON reader)
MAX_DEPTH = 8  # nesting of the cart's fields, the cart itself being depth 1
MAX_NODES = 20_000  # values (objects, lists, scalars) in the whole cart
MAX_STRING = 10_000  # characters in one string (key or value)


class Invalid(ValueError):
    """The request is not acceptable; the message is safe to send back."""


def valid_id(value: str) -> bool:
    return ID_RE.fullmatch(value) is not None


def valid_key(value: str) -> bool:
    return KEY_RE.fullmatch(value) is not None


def valid_request_id(value: str) -> bool:
    return REQUEST_ID_RE.fullmatch(value) is not None


def _reject_constant(name: str) -> Any:
    raise Invalid(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """JSON per RFC 8259 (no NaN/Infinity); Invalid on anything else."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except Invalid:
        raise
    except (ValueError, RecursionError):
        raise Invalid("body is not valid JSON") from None


def _number(value: Any) -> bool:
    """A JSON number within float range (an integer beyond it is refused, not an error)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (10**400)
        return False


def _amount(value: Any) -> bool:
    return _number(value) and abs(value) <= MAX_AMOUNT


def check_tree(value: Any) -> None:
    """Bound depth, size, strings and numbers of any JSON value (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise Invalid(f"cart has more than {MAX_NODES} values")
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise Invalid(f"cart nested deeper than {MAX_DEPTH}")
            for key, child in node.items():
                if len(key) > MAX_STRING:
                    raise Invalid("field name too long")
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                raise Invalid(f"cart nested deeper than {MAX_DEPTH}")
            stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str):
            if len(node) > MAX_STRING:
                raise Invalid("string too long")
        elif isinstance(node, bool) or node is None:
            pass
        elif isinstance(node, int):
            if abs(node) > MAX_INT:
                raise Invalid("integer out of range")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise Invalid("number out of range")
        else:  # pragma: no cover - json.loads makes nothing else
            raise Invalid("unexpected value")


def check_cart(cart: Any) -> dict[str, Any]:
    """Return the cart when it can be paid; raise Invalid saying why otherwise."""
    if not isinstance(cart, dict):
        raise Invalid("cart must be a JSON object")
    total = cart.get("total")
    if not _amount(total) or total <= 0:
        raise Invalid("total must be a number > 0")
    if "tax" in cart and not _amount(cart["tax"]):
        raise Invalid("tax must be a number")
    items = cart.get("items")
    if not isinstance(items, list) or not items:
        raise Invalid("items must be a non-empty list")
    if len(items) > MAX_ITEMS:
        raise Invalid(f"at most {MAX_ITEMS} items")
    shipping = 0
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Invalid(f"items[{index}] must be an object")
        sku = item.get("sku")
        if not isinstance(sku, str) or not sku or len(sku) > MAX_SKU:
            raise Invalid(f"items[{index}].sku must be a non-empty string")
        qty = item.get("qty")
        if not isinstance(qty, int) or isinstance(qty, bool) or not 0 < qty <= MAX_QTY:
            raise Invalid(f"items[{index}].qty must be an integer from 1 to {MAX_QTY}")
        for field in ("price", "subtotal"):
            if not _amount(item.get(field)) or item[field] < 0:
                raise Invalid(f"items[{index}].{field} must be a number >= 0")
        if sku == "SHIP":
            shipping += 1
    if shipping != 1:
        raise Invalid("the cart needs exactly one SHIP item (shipping not chosen)")
    check_tree(cart)
    return cart


def canonical(value: Any) -> Any:
    """The value with equal numbers made equal (10.0 -> 10), for fingerprints."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def units(cart: dict[str, Any]) -> int:
    """Items sold, shipping excluded (RoboShop's sold_count / units_sold)."""
    return sum(item["qty"] for item in cart["items"] if item["sku"] != "SHIP")
