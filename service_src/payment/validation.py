"""Checks on what a client sends: the path id, the Idempotency-Key and the cart."""

from __future__ import annotations

import json
import math
import re
from typing import Any

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_ITEMS = 1000
MAX_SKU = 128


class Invalid(ValueError):
    """The request is not acceptable; the message is safe to send back."""


def valid_id(value: str) -> bool:
    return bool(ID_RE.match(value))


def valid_key(value: str) -> bool:
    return bool(KEY_RE.match(value))


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
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_cart(cart: Any) -> dict[str, Any]:
    """Return the cart when it can be paid; raise Invalid saying why otherwise."""
    if not isinstance(cart, dict):
        raise Invalid("cart must be a JSON object")
    total = cart.get("total")
    if not _number(total) or total <= 0:
        raise Invalid("total must be a number > 0")
    if "tax" in cart and not _number(cart["tax"]):
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
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
            raise Invalid(f"items[{index}].qty must be a positive integer")
        for field in ("price", "subtotal"):
            if not _number(item.get(field)) or item[field] < 0:
                raise Invalid(f"items[{index}].{field} must be a number >= 0")
        if sku == "SHIP":
            shipping += 1
    if shipping != 1:
        raise Invalid("the cart needs exactly one SHIP item (shipping not chosen)")
    return cart


def units(cart: dict[str, Any]) -> int:
    """Items sold, shipping excluded (RoboShop's sold_count / units_sold)."""
    return sum(item["qty"] for item in cart["items"] if item["sku"] != "SHIP")
