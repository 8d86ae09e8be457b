"""The page at `/` in a real browser: submit with the API key, watch statuses and progress arrive over SSE,
see the outcome, approve a waiting pipeline, pick from the registered kinds, watch the tenant's recent requests."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Page, Response, expect

from ackflow.settings import Settings
from gateway.page import CONTENT_SECURITY_POLICY
from tests.conftest import Tenant, api_client

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
FINISH_TIMEOUT_MS = 30_000  # a request's whole run: relay, Temporal, handler
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class OpenedPage:
    """The page, loaded from the gateway, with everything the browser reported while it ran."""

    page: Page
    base_url: str
    document: Response
    console_errors: list[str] = field(default_factory=list)
    requested_urls: list[str] = field(default_factory=list)
    posted_urls: list[str] = field(default_factory=list)

    def check_clean(self, *, expected_errors: tuple[str, ...] = ()) -> None:
        """No script or console errors (but those expected), and no request left the gateway's origin."""
        unexpected = [e for e in self.console_errors if not any(part in e for part in expected_errors)]
        assert unexpected == [], unexpected
        foreign = [url for url in self.requested_urls if not url.startswith(self.base_url)]
        assert foreign == [], f"the page must work offline, yet it requested {foreign}"


@pytest.fixture
async def opened(stack: None, settings: Settings, browser_page: Page) -> AsyncIterator[OpenedPage]:
    base_url = f"http://127.0.0.1:{settings.http_port}/"
    errors: list[str] = []
    urls: list[str] = []
    posted: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    browser_page.on("console", on_console)
    browser_page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    browser_page.on("request", lambda request: urls.append(request.url))
    browser_page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    document = await browser_page.goto(base_url)
    assert document is not None and document.status == 200
    yield OpenedPage(browser_page, base_url, document, errors, urls, posted)


async def submit(page: Page, api_key: str, kind: str, payload: str) -> None:
    """Fill the form as a user would, finding each field by its label."""
    await page.get_by_label("API key").fill(api_key)
    await page.get_by_label("Kind").fill(kind)
    await page.get_by_label("Payload (JSON object)").fill(payload)
    await page.get_by_role("button", name="Submit").click()


async def test_sleep_request_shows_init_processing_done_live_then_its_result(
    opened: OpenedPage, tenant: Tenant
) -> None:
    page = opened.page
    await expect(page.get_by_label("Payload (JSON object)")).to_have_value('{"hello": "world"}')

    await submit(page, tenant.api_key, "sleep", '{"seconds": 1}')

    await expect(page.get_by_test_id("request-id")).to_have_text(UUID)
    statuses = page.get_by_test_id("statuses").locator(".status")
    await expect(statuses).to_have_text(["INIT", "PROCESSING", "DONE"], timeout=FINISH_TIMEOUT_MS)
    outcome = page.get_by_test_id("outcome")
    await expect(outcome).to_have_text(re.compile(r'"slept":\s*1\b'))
    assert json.loads(await outcome.inner_text()) == {"slept": 1}
    await expect(page.get_by_role("status")).to_contain_text("DONE")
    await expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
    await expect(page.get_by_role("alert")).to_be_hidden()

    # The key is remembered for the tab's session, and never travelled in a URL.
    assert await page.evaluate("() => sessionStorage.getItem('ackflow.apiKey')") == tenant.api_key
    assert not any(tenant.api_key in url for url in opened.requested_urls)
    await page.reload()
    await expect(page.get_by_label("API key")).to_have_value(tenant.api_key)
    opened.check_clean()


async def test_failing_request_shows_failed_and_the_handler_error_message(opened: OpenedPage, tenant: Tenant) -> None:
    page = opened.page

    await submit(page, tenant.api_key, "fail", '{"message": "the printer is on fire"}')

    statuses = page.get_by_test_id("statuses").locator(".status")
    await expect(statuses).to_have_text(["INIT", "PROCESSING", "FAILED"], timeout=FINISH_TIMEOUT_MS)
    await expect(page.get_by_test_id("outcome")).to_contain_text("the printer is on fire")
    await expect(page.get_by_role("status")).to_contain_text("FAILED")
    opened.check_clean()


async def test_cancel_button_cancels_a_running_request(opened: OpenedPage, tenant: Tenant) -> None:
    page = opened.page
    await submit(page, tenant.api_key, "sleep", '{"seconds": 60}')
    statuses = page.get_by_test_id("statuses").locator(".status")
    await expect(statuses).to_have_text(["INIT", "PROCESSING"], timeout=FINISH_TIMEOUT_MS)

    await page.get_by_role("button", name="Cancel").click()

    await expect(statuses).to_have_text(["INIT", "PROCESSING", "CANCELLED"], timeout=FINISH_TIMEOUT_MS)
    await expect(page.get_by_test_id("outcome")).to_contain_text("Cancelled")
    await expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
    opened.check_clean()


async def test_pipeline_shows_its_progress_then_approve_delivers_the_approval_and_it_ends_done(
    opened: OpenedPage, tenant: Tenant
) -> None:
    page = opened.page
    await submit(page, tenant.api_key, "pipeline", '{"items": 3, "step_seconds": 0.2}')

    waiting = page.get_by_test_id("waiting")
    await expect(waiting).to_be_visible(timeout=FINISH_TIMEOUT_MS)
    await expect(page.get_by_test_id("waiting-input")).to_have_text("approval")
    await expect(page.get_by_test_id("progress-message")).to_have_text("80 %, transformed 3 of 3")
    assert await page.get_by_test_id("progress").evaluate("bar => bar.value") == pytest.approx(0.8)
    await expect(page.get_by_role("status")).to_contain_text("waiting for approval")

    await page.get_by_role("button", name="Approve").click()

    statuses = page.get_by_test_id("statuses").locator(".status")
    await expect(statuses).to_have_text(["INIT", "PROCESSING", "DONE"], timeout=FINISH_TIMEOUT_MS)
    await expect(waiting).to_be_hidden()
    assert json.loads(await page.get_by_test_id("outcome").inner_text())["approved_by"] == "the ackflow page"
    await expect(page.get_by_test_id("progress-message")).to_have_text("100 %, published")
    arrived = await page.get_by_test_id("statuses").locator("time").evaluate_all("times => times.map(t => t.dateTime)")
    assert len(arrived) == 3 and arrived == sorted(arrived) and all(at.endswith("Z") for at in arrived), arrived
    opened.check_clean()


async def test_reject_ends_the_waiting_pipeline_failed_with_not_approved(opened: OpenedPage, tenant: Tenant) -> None:
    page = opened.page
    await submit(page, tenant.api_key, "pipeline", '{"items": 1, "step_seconds": 0}')
    await expect(page.get_by_test_id("waiting")).to_be_visible(timeout=FINISH_TIMEOUT_MS)

    await page.get_by_role("button", name="Reject").click()

    statuses = page.get_by_test_id("statuses").locator(".status")
    await expect(statuses).to_have_text(["INIT", "PROCESSING", "FAILED"], timeout=FINISH_TIMEOUT_MS)
    await expect(page.get_by_test_id("outcome")).to_contain_text("not approved by the ackflow page")
    opened.check_clean()


async def test_the_kind_field_offers_the_kinds_the_workers_registered(opened: OpenedPage, tenant: Tenant) -> None:
    page = opened.page
    await page.get_by_label("API key").fill(tenant.api_key)
    await page.get_by_label("API key").press("Tab")

    options = page.get_by_test_id("kinds").locator("option")
    await expect(options.first).to_be_attached()
    offered = await options.evaluate_all("options => options.map(o => [o.value, o.label])")
    by_kind = dict(offered)
    assert {"echo", "fail", "pipeline", "sleep"} <= set(by_kind), offered
    assert "workflow ExamplePipeline" in by_kind["pipeline"], by_kind["pipeline"]
    opened.check_clean()


async def test_recent_requests_list_the_tenants_requests_and_follow_them_live(
    opened: OpenedPage, settings: Settings, tenant: Tenant
) -> None:
    page = opened.page
    async with api_client(settings, tenant.api_key) as http:
        before = (await http.post("/v1/requests", json={"kind": "echo", "payload": {"n": 1}})).json()["id"]
        await page.get_by_label("API key").fill(tenant.api_key)
        await page.get_by_label("API key").press("Tab")
        recent = page.get_by_test_id("recent")
        await expect(recent.locator(f'tr[data-id="{before}"]')).to_be_attached(timeout=FINISH_TIMEOUT_MS)

        # Submitted elsewhere while the page is open: it appears and follows its statuses to DONE.
        after = (await http.post("/v1/requests", json={"kind": "sleep", "payload": {"seconds": 1}})).json()["id"]
        row = recent.locator(f'tr[data-id="{after}"]')
        await expect(row).to_have_attribute("data-status", "DONE", timeout=FINISH_TIMEOUT_MS)
        await expect(row).to_contain_text("sleep")
    await expect(recent.locator("tbody tr").first).to_have_attribute("data-id", after)
    opened.check_clean()


async def test_wrong_api_key_shows_the_401_problem_detail(opened: OpenedPage, settings: Settings) -> None:
    page = opened.page
    wrong_key = "ak_not_a_real_key_0000"
    async with api_client(settings, wrong_key) as http:
        problem = (await http.post("/v1/requests", json={"kind": "echo", "payload": {}})).json()

    await submit(page, wrong_key, "echo", '{"hello": "world"}')

    alert = page.get_by_role("alert")
    await expect(alert).to_be_visible()
    await expect(alert).to_contain_text(problem["title"])
    await expect(alert).to_contain_text(problem["detail"])
    await expect(page.get_by_test_id("statuses").get_by_role("listitem")).to_have_count(0)
    # The browser itself logs the failed fetch; nothing else may be reported.
    opened.check_clean(expected_errors=("status of 401",))


async def test_bad_payload_and_unknown_kind_are_explained_and_start_nothing(
    opened: OpenedPage, settings: Settings, tenant: Tenant
) -> None:
    page = opened.page
    async with api_client(settings, tenant.api_key) as http:
        unknown_kind = (await http.post("/v1/requests", json={"kind": "no-such-kind", "payload": {}})).json()
    alert = page.get_by_role("alert")

    await submit(page, tenant.api_key, "echo", '{"hello": ')
    await expect(alert).to_contain_text("not valid JSON")
    assert not any("/v1/requests" in url for url in opened.posted_urls), "invalid JSON must not be sent"

    await submit(page, tenant.api_key, "no-such-kind", '{"hello": "world"}')
    await expect(alert).to_contain_text(unknown_kind["detail"])
    await expect(page.get_by_test_id("request-id")).not_to_have_text(UUID)
    opened.check_clean(expected_errors=("status of 422",))


async def test_page_and_its_assets_are_served_without_auth_with_security_headers(
    opened: OpenedPage, settings: Settings
) -> None:
    document_headers = await opened.document.all_headers()
    assert document_headers["content-type"].startswith("text/html")
    for name, value in SECURITY_HEADERS.items():
        assert document_headers.get(name) == value, (name, document_headers)

    async with api_client(settings, None) as anonymous:
        for path, media_type in [("/static/app.js", "text/javascript"), ("/static/app.css", "text/css")]:
            response = await anonymous.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith(media_type), path
            assert response.headers["x-content-type-options"] == "nosniff", path
        for path in ["/static/nope.js", "/static/index.html", "/static/..%2fpage.py"]:
            missing = await anonymous.get(path)
            assert missing.status_code == 404, path
            assert missing.headers["content-type"].startswith("application/problem+json"), path
        wrong_method = await anonymous.post("/")
        assert wrong_method.status_code == 405
        assert wrong_method.headers["content-type"].startswith("application/problem+json")
        assert_no_external_references(await anonymous.get("/"))
    opened.check_clean()


def assert_no_external_references(response: httpx.Response) -> None:
    """The HTML names no other origin (no CDN) and carries no inline script for the CSP to block."""
    html = response.text
    assert not re.search(r"(?:src|href)\s*=\s*[\"'](?:https?:)?//", html), "the page must not load other origins"
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline scripts are blocked by the CSP"
