"""Schemathesis hooks (loaded with `SCHEMATHESIS_HOOKS=tests.contract.hooks`) that let the
fuzzing reach the core: every resource a call creates (sites, generations, batches,
purchase intents, accounts, API keys) is remembered, and later calls use those ids in
their paths and in `site_id` bodies most of the time instead of random UUIDs that could
only ever be `404`. Every answer is logged (operation, status) for the per-operation
counts the test prints and checks.

Only values that are valid UUIDs are swapped, so a deliberately invalid case stays
invalid. The account the fuzzer acts as is never revoked, and its own site (given by the
test) is never deleted, so the core stays reachable for the whole run.
"""

import json
import os
import random
import threading
import uuid
from typing import Any

import schemathesis

CALLS_LOG = os.environ["RF_CALLS_LOG"]
SITE_ID = os.environ["RF_SITE_ID"]
"""The fuzzing account's own site: used in bodies and GETs, never deleted."""
ADMIN_ACCOUNT_ID = os.environ["RF_ADMIN_ACCOUNT_ID"]
"""A second account for the admin operations (adjustments, keys), so that they cannot
drain or lock out the account the fuzzer generates with."""
USE_KNOWN_ID = 0.8

_random = random.Random(os.environ.get("RF_HOOKS_SEED", "0"))
_lock = threading.Lock()
_known: dict[str, list[str]] = {
    "site_id": [SITE_ID],
    "deletable_site_id": [],
    "generation_id": [],
    "batch_id": [],
    "intent_id": [],
    "account_id": [ADMIN_ACCOUNT_ID],
    "key_id": [],
}
# Which id a 2xx of an operation creates, and where it is in the body.
_CREATES: dict[tuple[str, str], list[tuple[str, tuple[str, ...]]]] = {
    ("POST", "/v1/sites"): [("site_id", ("id",)), ("deletable_site_id", ("id",))],
    ("POST", "/v1/generations"): [("generation_id", ("id",))],
    ("POST", "/v1/generation-batches"): [("batch_id", ("id",))],
    ("POST", "/v1/purchase-intents"): [("intent_id", ("id",))],
    ("POST", "/v1/admin/accounts"): [
        ("account_id", ("account", "id")),
        ("key_id", ("api_key", "id")),
    ],
    ("POST", "/v1/admin/accounts/{account_id}/api-keys"): [("key_id", ("api_key", "id"))],
}


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _dig(body: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(body, dict):
            return None
        body = body.get(part)
    return body


def _pick(kind: str) -> str | None:
    with _lock:
        known = list(_known[kind])
    if not known or _random.random() >= USE_KNOWN_ID:
        return None
    return _random.choice(known)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    operation = (case.operation.method.upper(), case.operation.path)
    for name, value in list((case.path_parameters or {}).items()):
        if not _is_uuid(value):
            continue
        kind = "deletable_site_id" if operation == ("DELETE", "/v1/sites/{site_id}") else name
        if kind in _known and (known := _pick(kind)) is not None:
            case.path_parameters[name] = known
    body = case.body
    if isinstance(body, dict) and _is_uuid(body.get("site_id")):
        known = _pick("site_id")
        if known is not None:
            body["site_id"] = known


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    operation = (case.operation.method.upper(), case.operation.path)
    status = response.status_code
    with _lock, open(CALLS_LOG, "a") as log:
        log.write(json.dumps([operation[0], operation[1], status, response.elapsed]) + "\n")
    if not 200 <= status < 300:
        return
    if operation == ("DELETE", "/v1/sites/{site_id}"):
        with _lock:
            for kind in ("site_id", "deletable_site_id"):
                gone = case.path_parameters.get("site_id")
                if gone in _known[kind] and gone != SITE_ID:
                    _known[kind].remove(gone)
        return
    if operation not in _CREATES:
        return
    try:
        body = response.json()
    except ValueError:
        return
    with _lock:
        for kind, path in _CREATES[operation]:
            found = _dig(body, path)
            # POST /v1/sites answers 200 with the fuzzing account's own site for its
            # project id: that one must never become deletable.
            if kind == "deletable_site_id" and found == SITE_ID:
                continue
            if _is_uuid(found) and found not in _known[kind]:
                _known[kind].append(found)
