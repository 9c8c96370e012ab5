import json
from pathlib import Path

from app.main import create_app
from tests.conftest import ROOT

COMMITTED = ROOT / "openapi" / "openapi.json"


def generated_document() -> str:
    return json.dumps(create_app().openapi(), indent=2) + "\n"


def test_committed_openapi_matches_the_app():
    assert COMMITTED.read_text() == generated_document(), (
        "openapi/openapi.json is stale: run `.venv/bin/python -m app openapi -o "
        "openapi/openapi.json` and commit it"
    )


def test_drift_check_notices_a_changed_schema(tmp_path: Path):
    document = json.loads(COMMITTED.read_text())
    document["components"]["schemas"]["BalanceRead"]["properties"].pop("display")
    tampered = tmp_path / "openapi.json"
    tampered.write_text(json.dumps(document, indent=2) + "\n")
    assert tampered.read_text() != generated_document()


def test_every_error_response_is_problem_json():
    document = json.loads(COMMITTED.read_text())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert "application/problem+json" in response.get("content", {}), (
                        f"{method.upper()} {path} {status}"
                    )
