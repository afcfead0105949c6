"""The Next.js example in Debian's Chromium, against a real Better Auth and a real task API.

Run by `make example-test` (e2e/run.py starts everything and passes EXAMPLE_APP_URL and
EXAMPLE_API_URL). Against servers you started yourself:
EXAMPLE_APP_URL=http://localhost:3000 EXAMPLE_API_URL=http://127.0.0.1:8000 \
    .venv/bin/python -m pytest examples/nextjs/e2e
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect

APP = os.environ.get("EXAMPLE_APP_URL", "").rstrip("/")
API = os.environ.get("EXAMPLE_API_URL", "").rstrip("/")
CHATKIT_JS = "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"
SCREENSHOTS = os.environ.get("EXAMPLE_SCREENSHOTS")  # a directory: save a few screenshots there

pytestmark = pytest.mark.skipif(
    not (APP and API),
    reason="needs EXAMPLE_APP_URL and EXAMPLE_API_URL (make example-test sets them)",
)


def get_without_following(url: str) -> tuple[int, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        return response.status, response.getheader("Location") or ""
    finally:
        conn.close()


def test_signed_out_visitors_are_redirected_by_the_server() -> None:
    # No browser and no JavaScript: the redirect is the server's own answer.
    for path in ("/", "/chatkit"):
        status, location = get_without_following(APP + path)
        assert status in (303, 307), (path, status)
        assert location.endswith("/sign-in"), (path, location)
    assert get_without_following(APP + "/sign-in")[0] == 200


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's Chromium is missing: apt-get install -y chromium")
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def new_page(browser: Any) -> tuple[Any, Any]:
    """A fresh browser profile (its own cookies); OpenAI's CDN is unreachable here, so it is
    refused at once rather than left to time out."""
    context = await browser.new_context()
    await context.route("https://cdn.platform.openai.com/**", lambda route: route.abort())
    page = await context.new_page()
    page.set_default_timeout(20_000)
    return context, page


async def shot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        await page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


async def sign_up(page: Any, name: str, email: str) -> None:
    await page.goto(APP + "/")
    await expect(page).to_have_url(APP + "/sign-in")
    await page.get_by_role("button", name="Create an account").click()
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page).to_have_url(APP + "/")
    await expect(page.get_by_role("banner")).to_contain_text(name)


async def test_chat_adds_a_task_only_its_owner_sees(browser: Any) -> None:
    run = secrets.token_hex(3)
    alice_email, bob_email = f"alice-{run}@example.com", f"bob-{run}@example.com"

    context, page = await new_page(browser)
    await sign_up(page, "Alice", alice_email)
    tasks = page.get_by_role("list", name="Tasks")
    messages = page.get_by_role("list", name="Messages")
    conversations = page.get_by_role("list", name="Conversations")
    await expect(page.get_by_text("No tasks yet.")).to_be_visible()
    await expect(page.get_by_text("No conversations yet.")).to_be_visible()

    # A streamed chat turn: the request carries the Better Auth JWT, the answer is SSE.
    async with page.expect_response(
        lambda r: r.url == f"{API}/api/chat" and r.request.method == "POST"
    ) as info:
        await page.get_by_role("textbox", name="Message").fill("add a task to buy milk")
        await page.keyboard.press("Enter")
    response = await info.value
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    request = response.request
    assert json.loads(request.post_data or "{}") == {
        "message": "add a task to buy milk",
        "stream": True,
    }
    assert (await request.all_headers())["authorization"].startswith("Bearer ey")

    await expect(messages).to_contain_text("Added 'Buy milk'")
    await expect(messages.get_by_text("add_task")).to_be_visible()  # the tool call chip
    await expect(tasks).to_contain_text("Buy milk")  # refreshed on the tool_result event
    await expect(conversations).to_contain_text("add a task to buy milk")

    # The same conversation continues.
    await page.get_by_role("textbox", name="Message").fill("show my tasks")
    await page.get_by_role("button", name="Send").click()
    await expect(messages.locator("li.message.assistant")).to_have_count(2)
    await expect(messages.locator("li.message.assistant").last).to_contain_text("Buy milk")
    await expect(page.get_by_role("button", name="Send")).to_have_text("Send")
    await expect(conversations.get_by_role("listitem")).to_have_count(1)
    await shot(page, "chat")

    # After a reload everything comes back from the API. The first GET /api/tasks is answered
    # 401 (as for an expired token): the page fetches a fresh token and retries once.
    refused: list[str] = []
    token_requests: list[str] = []

    def count_token_request(request: Any) -> None:
        if request.url.startswith(APP + "/api/auth/token"):
            token_requests.append(request.url)

    page.on("request", count_token_request)

    async def refuse_once(route: Any) -> None:
        if route.request.method == "GET" and not refused:
            refused.append(route.request.url)
            await route.fulfill(
                status=401,
                headers={
                    "Access-Control-Allow-Origin": APP,
                    "Access-Control-Allow-Credentials": "true",
                    "Content-Type": "application/json",
                },
                body='{"detail": "Token has expired", "code": "invalid_token"}',
            )
        else:
            await route.continue_()

    await page.route(f"{API}/api/tasks**", refuse_once)
    await page.reload()
    await expect(tasks).to_contain_text("Buy milk")
    assert len(refused) == 1
    # The first token, then a fresh one after the 401.
    assert len(token_requests) == 2, token_requests
    await page.unroute(f"{API}/api/tasks**")
    await conversations.get_by_role("button", name="add a task to buy milk").click()
    await expect(messages.locator("li.message")).to_have_count(4)
    await expect(messages).to_contain_text("Added 'Buy milk'")

    # The ChatKit page renders <openai-chatkit> and loads OpenAI's script (which cannot arrive here).
    await page.get_by_role("link", name="ChatKit").click()
    await expect(page).to_have_url(APP + "/chatkit")
    await expect(page.get_by_role("heading", name="ChatKit")).to_be_visible()
    await expect(page.locator("openai-chatkit")).to_be_attached()
    await expect(page.locator(f'script[src="{CHATKIT_JS}"]')).to_be_attached()
    # Without OpenAI's CDN the element is never defined, and the page says so.
    await expect(page.get_by_role("status")).to_contain_text("has not loaded", timeout=20_000)
    await shot(page, "chatkit")

    # Signing out ends the session: the server sends the visitor back to /sign-in.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(APP + "/sign-in")
    await page.goto(APP + "/")
    await expect(page).to_have_url(APP + "/sign-in")
    await shot(page, "sign-in")

    # Another user sees none of Alice's tasks or conversations.
    bob_context, bob = await new_page(browser)
    await sign_up(bob, "Bob", bob_email)
    await expect(bob.get_by_text("No tasks yet.")).to_be_visible()
    await expect(bob.get_by_text("No conversations yet.")).to_be_visible()
    await bob_context.close()

    # Alice signs in again and finds her task.
    await page.get_by_label("Email").fill(alice_email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(APP + "/")
    await expect(tasks).to_contain_text("Buy milk")
    await context.close()
