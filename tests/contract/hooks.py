"""Schemathesis hooks (loaded with `SCHEMATHESIS_HOOKS=tests.contract.hooks`) that let the
fuzzing reach the core: every resource a call creates (sites, generations, batches,
purchase intents, accounts, API keys) is remembered, and later calls use those ids in
their paths and in `site_id` bodies most of the time instead of random UUIDs that could
only ever be `404`. Every answer is logged (operation, status, phase, problem code) for
the per-operation counts the test prints and checks.

The documented examples (the examples phase) always get known ids: they are what a client
copies, and they must work against a live server. A valid `Idempotency-Key` is replaced by
a fresh one most of the time, as a client sends one key per intended request: the coverage
phase sends one key with dozens of different bodies, and otherwise nearly every positive
case of an idempotent operation was only ever `409 idempotency_key_reused` (a random-seed
run once never got a `2xx` from `POST /v1/generations`). The rest keep their key, so reuse
is still tried.

Only values that are valid UUIDs (or valid keys) are swapped, so a deliberately invalid
case stays invalid. The account the fuzzer acts as, its key and its own site (given by the
test) are never the target of a write (`PROTECTED`), so the core stays reachable for the
whole run and for the run after it.
"""

import json
import os
import random
import threading
import uuid
from typing import Any

import schemathesis
from schemathesis.generation.meta import TestPhase

CALLS_LOG = os.environ["RF_CALLS_LOG"]
SITE_ID = os.environ["RF_SITE_ID"]
"""The fuzzing account's own site: used in bodies and GETs, never deleted."""
PROTECTED = frozenset((SITE_ID, os.environ["RF_ACCOUNT_ID"], os.environ["RF_KEY_ID"]))
"""The fuzzing account, its API key and its site: no write targets them. The stateful
phase takes ids from earlier answers (the site list, say); it once deleted the site that
every generation needs, and the next run never got a `2xx` from `POST /v1/generations`."""
ADMIN_ACCOUNT_ID = os.environ["RF_ADMIN_ACCOUNT_ID"]
"""A second account for the admin operations (adjustments, keys), so that they cannot
drain or lock out the account the fuzzer generates with."""
USE_KNOWN_ID = 0.8
FRESH_KEY = 0.8
KEY_HEADER = "idempotency-key"

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


def _pick(kind: str, always: bool) -> str | None:
    with _lock:
        known = list(_known[kind])
        if not known or (not always and _random.random() >= USE_KNOWN_ID):
            return None
        return _random.choice(known)


def _fresh_key(case: Any) -> None:
    for name, value in list((case.headers or {}).items()):
        if name.lower() != KEY_HEADER or not isinstance(value, str):
            continue
        with _lock:
            if not 1 <= len(value) <= 255 or _random.random() >= FRESH_KEY:
                return
            case.headers[name] = f"fuzz-{uuid.UUID(int=_random.getrandbits(128))}"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    operation = (case.operation.method.upper(), case.operation.path)
    example = case.meta is not None and case.meta.phase.name == TestPhase.EXAMPLES
    for name, value in list((case.path_parameters or {}).items()):
        if not _is_uuid(value):
            continue
        kind = "deletable_site_id" if operation == ("DELETE", "/v1/sites/{site_id}") else name
        known = _pick(kind, example) if kind in _known else None
        if known is None and value in PROTECTED and operation[0] != "GET":
            with _lock:
                known = str(uuid.UUID(int=_random.getrandbits(128)))
        if known is not None:
            case.path_parameters[name] = known
    body = case.body
    if isinstance(body, dict) and _is_uuid(body.get("site_id")):
        known = _pick("site_id", example)
        if known is not None:
            body["site_id"] = known
    _fresh_key(case)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    operation = (case.operation.method.upper(), case.operation.path)
    status = response.status_code
    code = None
    if status >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if isinstance(problem, dict) and isinstance(problem.get("code"), str):
            code = problem["code"]
    phase = case.meta.phase.name.value if case.meta is not None else None
    with _lock, open(CALLS_LOG, "a") as log:
        row = [operation[0], operation[1], status, response.elapsed, phase, code]
        log.write(json.dumps(row) + "\n")
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
