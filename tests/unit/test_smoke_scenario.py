"""The smoke scenario runner, against a hand-written fake Specivo and a fake command runner."""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from specivod.engine.ports import HttpAnswer
from specivod.engine.smoke import SmokeScenario
from specivod.engine.smoke_steps import MISSING, CommandOutcome, HttpRequest, lookup
from specivod.settings import HealthSettings

PASSWORD = "smoke-pass-4711"
BASE = "http://127.0.0.1:8080"

SIGN_IN: dict[str, Any] = {
    "name": "sign in",
    "method": "POST",
    "url": "/api/session",
    "form": {"user": "smoke", "password": "{password}"},
    "capture": {"token": "$.token"},
}
OPEN: dict[str, Any] = {
    "name": "open an issue",
    "method": "POST",
    "url": "/api/issues",
    "headers": {"Authorization": "Bearer {token}"},
    "json": {"title": "smoke {run_id}", "labels": ["smoke"]},
    "expect_status": 201,
    "capture": {"issue_id": "id"},
}
SEARCH: dict[str, Any] = {
    "name": "search for it",
    "url": "/api/search?q=smoke%20{run_id}",
    "headers": {"Authorization": "Bearer {token}"},
    "json_equals": {"issues[0].id": "{issue_id}", "total": 1},
}
DELETE: dict[str, Any] = {
    "name": "delete the issue",
    "method": "DELETE",
    "url": "/api/issues/{issue_id}",
    "headers": {"Authorization": "Bearer {token}"},
    "expect_status": 204,
    "cleanup": True,
}
SCENARIO = [SIGN_IN, OPEN, SEARCH, DELETE]


class FakeSpecivo:
    """Sign-in, issues and search, like the sandbox's fake; ``search_broken`` finds nothing."""

    TOKEN = "tok-9f8e7d6c5b4a"

    def __init__(self) -> None:
        self.issues: dict[int, str] = {}
        self.search_broken = False
        self.delete_status = 204
        self.echo_secrets = False
        self.requests: list[HttpRequest] = []

    async def send(self, request: HttpRequest, timeout: float) -> HttpAnswer:
        self.requests.append(request)
        url = urllib.parse.urlsplit(request.url)
        path = url.path.removeprefix("/api")
        if path == "/session":
            form = urllib.parse.parse_qs((request.body or b"").decode())
            if form.get("password") != [PASSWORD]:
                return HttpAnswer(401, "bad credentials")
            return HttpAnswer(200, json.dumps({"token": self.TOKEN}))
        if request.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            return HttpAnswer(401, "sign in first")
        if path == "/issues" and request.method == "POST":
            issue = len(self.issues) + 1
            self.issues[issue] = json.loads(request.body or b"{}")["title"]
            return HttpAnswer(201, json.dumps({"id": issue}))
        if path == "/search":
            query = urllib.parse.parse_qs(url.query)["q"][0]
            found = [] if self.search_broken else [i for i, t in self.issues.items() if t == query]
            body = {"issues": [{"id": i} for i in found], "total": len(found)}
            if self.echo_secrets:
                body["debug"] = f"token {self.TOKEN} password {PASSWORD}"
            return HttpAnswer(200, json.dumps(body))
        if path.startswith("/issues/") and request.method == "DELETE":
            self.issues.pop(int(path.rsplit("/", 1)[1]), None)
            return HttpAnswer(self.delete_status, "")
        return HttpAnswer(404, "no such endpoint")


PASSED = CommandOutcome(0, "")


class FakeCommands:
    def __init__(self, outcome: CommandOutcome | Exception = PASSED) -> None:
        self.outcome = outcome
        self.runs: list[tuple[list[str], dict[str, str], float]] = []

    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> CommandOutcome:
        self.runs.append((list(argv), dict(env), timeout))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def _scenario(
    tmp_path: Path,
    steps: list[dict[str, Any]],
    http: FakeSpecivo | None = None,
    commands: FakeCommands | None = None,
) -> SmokeScenario:
    secret = tmp_path / "smoke-password"
    secret.write_text(PASSWORD + "\n")
    settings = HealthSettings.model_validate(
        {"base_url": BASE, "secrets": {"password": str(secret)}, "smoke": steps}
    )
    return SmokeScenario(settings, http or FakeSpecivo(), commands, lambda: "r1/d2")


async def test_the_scenario_signs_in_opens_searches_and_deletes(tmp_path: Path) -> None:
    specivo = FakeSpecivo()

    outcome = await _scenario(tmp_path, SCENARIO, specivo).run("0.2.0", "0.1.10")

    assert outcome.passed, outcome.detail
    assert outcome.detail == (
        "smoke 'sign in', 'open an issue', 'search for it', 'delete the issue' passed"
    )
    sign_in, create, search, delete = specivo.requests
    assert sign_in.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert create.headers == {
        "Authorization": f"Bearer {FakeSpecivo.TOKEN}",
        "Content-Type": "application/json",
    }
    assert json.loads(create.body or b"") == {"title": "smoke r1/d2", "labels": ["smoke"]}
    assert search.url == f"{BASE}/api/search?q=smoke%20r1%2Fd2", "values are URL-encoded"
    assert (delete.method, delete.url) == ("DELETE", f"{BASE}/api/issues/1")
    assert specivo.issues == {}


async def test_a_healthy_release_whose_search_finds_nothing_fails_and_cleans_up(
    tmp_path: Path,
) -> None:
    specivo = FakeSpecivo()
    specivo.search_broken = True

    outcome = await _scenario(tmp_path, SCENARIO, specivo).run("0.2.8", "0.2.0")

    assert not outcome.passed
    assert outcome.detail.startswith(
        f"failed smoke step 'search for it': GET {BASE}/api/search?q=smoke%20{{run_id}}: "
        "the answer has nothing at issues[0].id"
    )
    assert outcome.detail.endswith("; cleanup 'delete the issue' passed")
    assert specivo.issues == {}, "the cleanup step ran after the failed step"


async def test_steps_after_a_failure_are_skipped_but_cleanup_runs(tmp_path: Path) -> None:
    specivo = FakeSpecivo()
    after = {**SEARCH, "name": "search again"}

    outcome = await _scenario(
        tmp_path, [SIGN_IN, OPEN, {**SEARCH, "json_exists": ["nothing"]}, after, DELETE], specivo
    ).run("0.2.0", None)

    assert not outcome.passed
    assert [r.method for r in specivo.requests] == ["POST", "POST", "GET", "DELETE"]


async def test_a_cleanup_whose_capture_never_happened_is_skipped(tmp_path: Path) -> None:
    specivo = FakeSpecivo()
    bad_sign_in = {**SIGN_IN, "form": {"user": "smoke", "password": "wrong"}}

    outcome = await _scenario(tmp_path, [bad_sign_in, OPEN, DELETE], specivo).run("0.2.0", None)

    assert not outcome.passed
    assert outcome.detail.startswith(
        f"failed smoke step 'sign in': POST {BASE}/api/session: answered 401, not 200"
    )
    assert "cleanup 'delete the issue' skipped: {issue_id}, {token} never captured" in (
        outcome.detail
    )
    assert len(specivo.requests) == 1


async def test_a_failed_cleanup_is_reported_and_logged_but_fails_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specivo = FakeSpecivo()
    specivo.delete_status = 500

    with caplog.at_level(logging.WARNING):
        outcome = await _scenario(tmp_path, SCENARIO, specivo).run("0.2.0", None)

    assert outcome.passed
    assert outcome.detail.endswith(
        f"; cleanup 'delete the issue' failed: DELETE {BASE}/api/issues/{{issue_id}}: "
        "answered 500, not 204: ''"
    )
    assert "smoke cleanup step 'delete the issue' failed" in caplog.text


async def test_neither_the_password_nor_a_captured_token_reaches_the_detail_or_a_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specivo = FakeSpecivo()
    specivo.search_broken = specivo.echo_secrets = True

    with caplog.at_level(logging.DEBUG):
        outcome = await _scenario(tmp_path, SCENARIO, specivo).run("0.2.0", None)

    assert not outcome.passed
    assert "token ******** password ********" in outcome.detail
    for text in (outcome.detail, caplog.text):
        assert PASSWORD not in text and FakeSpecivo.TOKEN not in text


async def test_a_command_gets_the_versions_base_url_and_its_env(tmp_path: Path) -> None:
    commands = FakeCommands()
    step = {
        "name": "browser test",
        "command": ["/usr/local/bin/smoke", "--release", "{version}"],
        "env": {"SMOKE_PASSWORD": "{password}"},
        "timeout": "2m",
    }

    outcome = await _scenario(tmp_path, [step], commands=commands).run("0.2.0", "0.1.10")

    assert outcome.passed
    [(argv, env, timeout)] = commands.runs
    assert argv == ["/usr/local/bin/smoke", "--release", "0.2.0"]
    assert env == {
        "SPECIVOD_TARGET_VERSION": "0.2.0",
        "SPECIVOD_FROM_VERSION": "0.1.10",
        "SPECIVOD_BASE_URL": BASE,
        "SMOKE_PASSWORD": PASSWORD,
    }
    assert timeout == 120


async def test_a_failed_command_reports_its_last_lines_with_secrets_masked(tmp_path: Path) -> None:
    output = "\n".join(f"line {n}" for n in range(1, 9)) + f"\nlogin as smoke/{PASSWORD} refused\n"
    commands = FakeCommands(CommandOutcome(3, output))
    step = {"name": "browser test", "command": ["smoke.sh"], "env": {"PW": "{password}"}}

    outcome = await _scenario(tmp_path, [step], commands=commands).run("0.2.0", None)

    assert not outcome.passed
    assert outcome.detail == (
        "failed smoke step 'browser test': command `smoke.sh`: exited with 3: "
        "line 5 / line 6 / line 7 / line 8 / login as smoke/******** refused"
    )


async def test_a_command_that_times_out_fails_the_step(tmp_path: Path) -> None:
    commands = FakeCommands(TimeoutError())
    step = {"name": "slow script", "command": ["smoke.sh"], "timeout": "5s"}

    outcome = await _scenario(tmp_path, [step], commands=commands).run("0.2.0", None)

    assert not outcome.passed
    assert outcome.detail == (
        "failed smoke step 'slow script': command `smoke.sh`: did not finish within 5s (killed)"
    )


async def test_an_answer_that_is_not_json_fails_a_json_assertion(tmp_path: Path) -> None:
    specivo = FakeSpecivo()
    step = {"name": "refused", "url": "/api/session", "expect_status": 401, "json_exists": ["a"]}

    outcome = await _scenario(tmp_path, [step], specivo).run("0.2.0", None)

    assert outcome.detail.endswith("the answer is not JSON: 'bad credentials'")


async def test_a_network_failure_names_the_step_not_the_rendered_url(tmp_path: Path) -> None:
    class Unreachable(FakeSpecivo):
        async def send(self, request: HttpRequest, timeout: float) -> HttpAnswer:
            raise ConnectionRefusedError(111, "Connection refused")

    outcome = await _scenario(tmp_path, [SIGN_IN], Unreachable()).run("0.2.0", None)

    assert outcome.detail == (
        f"failed smoke step 'sign in': POST {BASE}/api/session: no answer: Connection refused"
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("token", "t"),
        ("$.token", "t"),
        ("issues.0.id", 7),
        ("$.issues[1].tags[0]", "x"),
        ("issues.2", MISSING),
        ("token.id", MISSING),
        ("issues.first", MISSING),
    ],
)
def test_json_paths(path: str, expected: object) -> None:
    document = {"token": "t", "issues": [{"id": 7}, {"tags": ["x"]}]}

    assert lookup(document, path) == expected
