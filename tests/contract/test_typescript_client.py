"""The TypeScript client (`@rankframe/credits-client`): generated from the committed document,
built as a package another project can install, and run against a live server: its own
`node --test` suite and the plugin's flow."""

import json
import shutil
import subprocess
from pathlib import Path

from tests.clients.live import (
    CLIENTS,
    assert_all_passed,
    new_account_key,
    npm,
    running_live_service,
)
from tests.conftest import ROOT

CLIENT = CLIENTS / "typescript"


def test_generated_types_match_the_committed_document(tmp_path: Path):
    generated = tmp_path / "schema.d.ts"
    result = npm(
        "typescript",
        "exec",
        "--",
        "openapi-typescript",
        str(ROOT / "openapi" / "openapi.json"),
        "-o",
        str(generated),
    )
    assert result.returncode == 0, result.stderr
    assert generated.read_text() == (CLIENT / "src" / "schema.d.ts").read_text(), (
        "clients/typescript/src/schema.d.ts is stale: run `npm run generate` there"
    )


CONSUMER = """\
import {
  CreditsApiError, createCreditsClient, followBatch, getBalance, streamBalance,
  type Balance, type Generation, type GenerationKind,
} from "@rankframe/credits-client";

const client = createCreditsClient("http://127.0.0.1:1", "rfk_test");
const display = (b: Balance): string => b.display;
function outputText(g: Generation): string {
  switch (g.kind) {
    case "schema": return JSON.stringify(g.output?.schema ?? {});
    default: return g.output?.text ?? "";
  }
}
const kinds: GenerationKind[] = ["meta_title", "schema"];
const error = new CreditsApiError(402, {
  type: "t", title: "t", status: 402, detail: "d", code: "insufficient_credits",
  needed: 3, available: 1,
});
console.log(JSON.stringify({
  functions: [createCreditsClient, followBatch, getBalance, streamBalance].map((f) => typeof f),
  client: client.baseUrl, kinds, needed: error.needed, available: error.available,
  code: error.code, typed: typeof display === "function" && typeof outputText === "function",
}));
"""


def test_package_installs_into_another_project_with_its_types(tmp_path: Path):
    """What a new user does: pack the package, install the tarball, type-check and run."""
    build = npm("typescript", "run", "build")
    assert build.returncode == 0, build.stdout + build.stderr
    pack = npm("typescript", "pack", "--json", "--pack-destination", str(tmp_path))
    assert pack.returncode == 0, pack.stderr
    packed = json.loads(pack.stdout)[0]
    files = {f["path"] for f in packed["files"]}
    assert {"dist/index.js", "dist/index.d.ts", "dist/schema.d.ts", "README.md"} <= files
    assert not any(f.startswith(("test/", "build-test/", "examples/")) for f in files)

    project = tmp_path / "consumer"
    project.mkdir()
    (project / "package.json").write_text(
        json.dumps({"name": "consumer", "private": True, "type": "module"})
    )
    npm_bin = shutil.which("npm")
    assert npm_bin
    install = subprocess.run(
        [npm_bin, "install", "--prefer-offline", "--no-audit", "--no-fund",
         str(tmp_path / packed["filename"])],
        cwd=project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    (project / "consumer.ts").write_text(CONSUMER)
    (project / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "target": "ES2022",
                    "module": "NodeNext",
                    "moduleResolution": "NodeNext",
                    "strict": True,
                    "lib": ["ES2022", "DOM"],
                    "types": [],
                    "outDir": "out",
                },
                "files": ["consumer.ts"],
            }
        )
    )
    tsc = subprocess.run(
        ["node", str(CLIENT / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "."],
        cwd=project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tsc.returncode == 0, tsc.stdout + tsc.stderr
    run = subprocess.run(
        ["node", "out/consumer.js"], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen == {
        "functions": ["function"] * 4,
        "client": "http://127.0.0.1:1",
        "kinds": ["meta_title", "schema"],
        "needed": 3,
        "available": 1,
        "code": "insufficient_credits",
        "typed": True,
    }


def test_client_suite_and_plugin_flow_against_a_live_server(postgres_database):
    check = npm("typescript", "run", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    build = npm("typescript", "run", "build")
    assert build.returncode == 0, build.stdout + build.stderr

    with running_live_service(postgres_database.url) as service:
        suite = npm("typescript", "test", env=service.node_env(), timeout=300)
        key = new_account_key(service.url, "plugin-flow@example.com")
        flow = subprocess.run(
            ["node", "build-test/examples/plugin-flow.js", service.url, key],
            cwd=CLIENT, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    print(suite.stdout[-3000:])
    assert suite.returncode == 0, suite.stdout[-8000:] + suite.stderr[-4000:]
    assert_all_passed(suite.stdout, at_least=15)
    assert flow.returncode == 0, flow.stdout + flow.stderr
    seen = json.loads(flow.stdout.strip().splitlines()[-1])
    assert seen["before"] == 0
    assert seen["funded"] == 500  # the starter credits of the first site
    assert seen["after"] == 496  # one meta title and three alt texts
    assert seen["display"] == "496 Credits"
    assert seen["intent"] == "open"
    assert seen["batch"] == "completed"
    assert seen["events"][-1] == "done"
    assert 1 <= seen["events"].count("progress") <= 4
