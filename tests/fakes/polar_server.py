"""A stand-in for Polar's API on loopback: answers the checkout calls polar-sdk makes
(`POST /v1/checkouts/`) with the full `Checkout` shape the SDK deserializes, and can be
switched to fail (HTTP 500) or hang (a timeout) to test what a failing Polar leaves behind.

It also serves the checkout page a buyer sees at each checkout's `url`: a Pay button that,
once clicked, sends the signed `order.paid` Polar would send to `webhook_url` (the service's
`/v1/webhooks/polar`), so a browser test can buy credits the way a person does."""

import html
import json
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

import httpx

from tests.fakes.loopback import serving_fake
from tests.polar_webhooks import SECRET, delivery
from tests.polar_webhooks import order as order_payload

Mode = Literal["ok", "error", "timeout"]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakePolar:
    url: str = ""
    mode: Mode = "ok"
    hang_seconds: float = 5.0
    requests: list[RecordedRequest] = field(default_factory=list)
    checkouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhook_url: str | None = None
    """Where a Pay click sends `order.paid` (the service's `/v1/webhooks/polar`)."""
    webhook_secret: str = SECRET
    product_prices: dict[str, int] = field(default_factory=dict)
    """Price in cents of each product id (a checkout of another product costs 4900)."""
    paid: dict[str, str] = field(default_factory=dict)
    """Checkout id -> the Polar order id its Pay click created."""
    webhook_seconds: list[float] = field(default_factory=list)
    """How long each `order.paid` delivery took, until the service's answer."""

    def reset(self) -> None:
        self.mode = "ok"
        self.requests.clear()

    def checkout_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/checkouts/"]


def checkout_body(
    request: dict[str, Any], base_url: str = "https://sandbox.polar.sh", amount: int = 4900
) -> dict[str, Any]:
    """A `Checkout` as Polar's API returns it, for the requested products and metadata."""
    now = datetime.now(UTC)
    checkout_id = str(uuid.uuid4())
    product_id = request["products"][0]
    return {
        "id": checkout_id,
        "created_at": now.isoformat(),
        "modified_at": None,
        "custom_field_data": {},
        "payment_processor": "stripe",
        "status": "open",
        "client_secret": f"polar_c_{uuid.uuid4().hex}",
        "url": f"{base_url}/checkout/polar_c_{checkout_id}",
        "expires_at": (now + timedelta(hours=1)).isoformat(),
        "success_url": request.get("success_url") or "https://polar.sh/success",
        "return_url": None,
        "embed_origin": None,
        "amount": amount,
        "units": None,
        "min_units": None,
        "max_units": None,
        "discount_amount": 0,
        "net_amount": amount,
        "tax_amount": None,
        "tax_behavior": None,
        "total_amount": amount,
        "currency": "usd",
        "allow_trial": None,
        "active_trial_interval": None,
        "active_trial_interval_count": None,
        "trial_end": None,
        "organization_id": str(uuid.uuid4()),
        "product_id": product_id,
        "product_price_id": None,
        "discount_id": None,
        "allow_discount_codes": True,
        "require_billing_address": False,
        "is_discount_applicable": True,
        "is_free_product_price": False,
        "is_payment_required": True,
        "is_payment_setup_required": False,
        "is_payment_form_required": True,
        "customer_id": None,
        "is_business_customer": False,
        "customer_name": None,
        "customer_email": None,
        "customer_ip_address": None,
        "customer_billing_name": None,
        "customer_billing_address": None,
        "customer_tax_id": None,
        "payment_method_type": None,
        "payment_processor_metadata": {},
        "billing_address_fields": {
            "country": "required",
            "state": "disabled",
            "city": "disabled",
            "postal_code": "disabled",
            "line1": "disabled",
            "line2": "disabled",
        },
        "trial_interval": None,
        "trial_interval_count": None,
        "metadata": request.get("metadata") or {},
        "external_customer_id": request.get("external_customer_id"),
        "products": [],
        "product": None,
        "product_price": None,
        "prices": None,
        "discount": None,
        "subscription_id": None,
        "attached_custom_fields": [],
        "customer_metadata": {},
    }


CHECKOUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - Polar (stand-in)</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; margin: 2rem">
<h1>{title}</h1>{content}</body></html>"""
PAID = '<p data-testid="polar-paid">Payment received. You can close this window.</p>'


def _handler(fake: FakePolar) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _page(self, status: int, title: str, content: str) -> None:
            data = CHECKOUT_PAGE.format(title=html.escape(title), content=content).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _checkout(self) -> dict[str, Any] | None:
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            if len(parts) < 2 or parts[0] != "checkout" or not parts[1].startswith("polar_c_"):
                return None
            return fake.checkouts.get(parts[1].removeprefix("polar_c_"))

        def do_GET(self) -> None:
            checkout = self._checkout()
            if checkout is None:
                self._page(404, "Checkout not found", "<p>This checkout does not exist.</p>")
                return
            if checkout["id"] in fake.paid:
                self._page(200, "Paid", PAID)
                return
            amount = f"${checkout['total_amount'] / 100:,.2f}"
            self._page(
                200,
                "Checkout",
                f'<p>Total <strong data-testid="polar-amount">{amount}</strong></p>'
                '<form method="post" action="">'
                f'<button data-testid="polar-pay" type="submit" formaction="{self.path}/pay">'
                f"Pay {amount}</button></form>",
            )

        def _pay(self, checkout: dict[str, Any]) -> None:
            """Polar's side of a successful payment: the order, and its signed `order.paid`."""
            if checkout["id"] not in fake.paid:
                order_id = str(uuid.uuid4())
                fake.paid[checkout["id"]] = order_id
                data = order_payload(
                    order_id=order_id,
                    product_id=checkout["product_id"],
                    account_id=checkout["external_customer_id"],
                    metadata=checkout["metadata"],
                    checkout_id=checkout["id"],
                    total_amount=checkout["total_amount"],
                )
                if fake.webhook_url:
                    body, headers = delivery("order.paid", data, secret=fake.webhook_secret)
                    started = time.perf_counter()
                    httpx.post(fake.webhook_url, content=body, headers=headers, timeout=10)
                    fake.webhook_seconds.append(time.perf_counter() - started)
            self.send_response(303)
            self.send_header("Location", self.path.removesuffix("/pay"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path.startswith("/checkout/"):
                checkout = self._checkout() if self.path.endswith("/pay") else None
                if checkout is None:
                    self._page(404, "Checkout not found", "<p>This checkout does not exist.</p>")
                else:
                    self._pay(checkout)
                return
            body = json.loads(raw) if raw else None
            fake.requests.append(
                RecordedRequest(
                    "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
            )
            if self.path != "/v1/checkouts/":
                self._reply(404, {"error": "ResourceNotFound", "detail": "Not found"})
                return
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                self._reply(401, {"error": "Unauthorized", "detail": "no token"})
                return
            if fake.mode == "error":
                self._reply(500, {"error": "InternalServerError", "detail": "boom"})
                return
            if fake.mode == "timeout":
                time.sleep(fake.hang_seconds)
            product_id = body["products"][0]
            checkout = checkout_body(body, fake.url, fake.product_prices.get(product_id, 4900))
            fake.checkouts[checkout["id"]] = checkout
            self._reply(201, checkout)

    return Handler


def running_fake_polar() -> AbstractContextManager[FakePolar]:
    return serving_fake(FakePolar(), _handler)
