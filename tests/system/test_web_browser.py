"""The playground in a real Chromium (Debian's, driven by Playwright) against a real server process.

One server per module, started as `python -m backend.server.cli serve` on a free loopback port with the
built-in offline model and RATE_LIMIT_REQUESTS=3 per user; each test signs in as its own users.
The screenshots in docs/screenshots are taken here: they are rewritten when UPDATE_SCREENSHOTS=1
(or when missing), otherwise taken into a temporary directory so a test run leaves git clean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.env import isolated_env
from bench.servers import free_port, wait_http
from tests.support import ROOT

# One worker runs the whole module: one server and one Chromium, not one per xdist worker.
pytestmark = pytest.mark.xdist_group("browser")

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="the `playwright` package is missing: pip install -e '.[dev]'"
)
async_playwright = playwright_api.async_playwright
expect = playwright_api.expect

SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
RATE_LIMIT = 3
TOKEN_KEY = "task-assistant.token"
LOGINS: dict[str, str] = {}
"""Each server's login secret, as its start log printed it (`.../?login=<secret>`)."""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service, as a user starts it, on a free 127.0.0.1 port."""
    data_dir = tmp_path_factory.mktemp("web-data")
    log_path = data_dir / "server.log"
    env = isolated_env()
    env.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(data_dir),
        RATE_LIMIT_REQUESTS=str(RATE_LIMIT),
        RATE_LIMIT_WINDOW_SECONDS="60",
        LOG_LEVEL="WARNING",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "backend.server.cli", "serve", "--no-migrate"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_http(url + "/health", proc)
        except RuntimeError as exc:
            pytest.fail(f"{exc}:\n{log_path.read_text()[-3000:]}")
        printed = re.search(
            rf"playground: {re.escape(url)}/\?login=([\w-]+) ", log_path.read_text()
        )
        assert printed, log_path.read_text()[-3000:]
        LOGINS[url] = printed[1]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    executable = _chromium()
    if executable is None:
        pytest.skip(
            "Chromium not found and not installed: `apt-get install -y chromium` "
            "(.ci/run installs it when it can)"
        )
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


class Console:
    """Console errors and uncaught exceptions of a page (a CSP violation is a console error)."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


async def new_page(browser: Any, **context: Any) -> Any:
    context.setdefault("viewport", {"width": 1280, "height": 800})
    ctx = await browser.new_context(**context)
    return await ctx.new_page()


async def sign_in(page: Any, base: str, user: str) -> str:
    """Dev sign-in through the form, by keyboard, from the address the server printed at start
    (the page keeps the secret and takes it out of the address bar); returns the token kept."""
    await page.goto(f"{base}/?login={LOGINS[base]}")
    await expect(page).to_have_url(base + "/")
    await page.locator("#dev-user").fill(user)
    await page.locator("#dev-user").press("Enter")
    await expect(page.locator("#whoami-name")).to_have_text(user)
    token = await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')")
    assert token
    return str(token)


async def send(page: Any, message: str) -> None:
    await page.locator("#message").fill(message)
    await page.locator("#message").press("Enter")


def login(base: str) -> dict[str, str]:
    return {"X-Dev-Login": LOGINS[base]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def overflow(page: Any) -> int:
    """How many pixels the page is wider than the viewport (0 when nothing overflows)."""
    return int(
        await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


async def test_chat_tasks_history_and_isolation(server: str, browser: Any) -> None:
    page = await new_page(browser)
    console = Console(page)
    token = await sign_in(page, server, "alice")
    assert await page.evaluate("localStorage.length") == 0, "the token is kept in sessionStorage"
    await expect(page.locator("#message")).to_be_focused()

    # Shift+Enter adds a newline and sends nothing.
    await page.locator("#message").press("a")
    await page.locator("#message").press("Shift+Enter")
    await page.locator("#message").press("b")
    assert await page.locator("#message").input_value() == "a\nb"
    await expect(page.locator("#messages .message")).to_have_count(0)

    async with page.expect_response("**/api/chat") as chat_response:
        await send(page, "add a task to buy milk")
    response = await chat_response.value
    assert response.headers["content-type"].startswith("text/event-stream")
    request = response.request
    assert json.loads(request.post_data or "{}")["stream"] is True
    assert uuid.UUID(request.headers["idempotency-key"]).version == 4

    reply = page.locator("#messages .message.assistant").last
    await expect(reply.locator(".text")).to_contain_text("Added 'Buy milk'")
    # Built from one text node per `text.delta` event, not from the final `done` event.
    assert await reply.locator(".text").evaluate("t => t.childNodes.length") > 2
    chip = reply.locator(".chip")
    await expect(chip.locator(".chip-tool")).to_have_text("add_task")
    await expect(chip.locator(".chip-summary")).to_contain_text("Buy milk")
    await chip.locator("summary").click()
    await expect(chip.locator("pre").last).to_contain_text('"title": "Buy milk"')
    task = page.locator("#task-list li", has_text="Buy milk")
    await expect(task).to_have_count(1)
    await expect(page.locator("#message")).to_have_value("")

    # Tick it (by keyboard), then the API says it is completed.
    await task.locator("input[type=checkbox]").focus()
    await page.keyboard.press("Space")
    await expect(task).to_have_class(re.compile(r"\bdone\b"))
    async with httpx.AsyncClient(base_url=server, headers=bearer(token)) as api:
        tasks = (await api.get("/api/tasks")).json()["tasks"]
        assert [(t["title"], t["completed"]) for t in tasks] == [("Buy milk", True)]

    # After a reload the conversation is in the sidebar and opens with its history.
    await page.reload()
    await expect(page.locator("#whoami-name")).to_have_text("alice")
    entry = page.locator("#conversation-list .conversation-open")
    await expect(entry).to_have_text(["add a task to buy milk"])
    await page.locator("#new-conversation").click()
    await expect(page.locator("#messages .message")).to_have_count(0)
    await entry.click()
    await expect(page.locator("#messages .message.user .text")).to_have_text(
        ["add a task to buy milk"]
    )
    await expect(page.locator("#messages .message.assistant .chip-tool")).to_have_text(["add_task"])
    await expect(page.locator("#chat-heading")).to_have_text("add a task to buy milk")

    # Rename it from the sidebar, by keyboard.
    await page.get_by_role("button", name="Rename conversation: add a task to buy milk").click()
    await page.get_by_label("New title").fill("Groceries")
    await page.get_by_label("New title").press("Enter")
    await expect(entry).to_have_text(["Groceries"])
    async with httpx.AsyncClient(base_url=server, headers=bearer(token)) as api:
        conversations = (await api.get("/api/conversations")).json()["conversations"]
        assert [c["title"] for c in conversations] == ["Groceries"]
    assert console.errors == []

    # A second user, in another browser context, sees none of it...
    other = await new_page(browser)
    await sign_in(other, server, "bob")
    await expect(other.locator("#conversations-status")).to_have_text("No conversations yet.")
    await expect(other.locator("#tasks-status")).to_contain_text("No tasks yet")
    await expect(other.locator("#task-list li")).to_have_count(0)
    # ...nor after signing out and in again as bob in alice's tab.
    await page.locator("#sign-out").click()
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    await page.locator("#dev-user").fill("bob")
    await page.locator("#dev-user").press("Enter")
    await expect(page.locator("#whoami-name")).to_have_text("bob")
    await expect(page.locator("#conversations-status")).to_have_text("No conversations yet.")
    await expect(page.locator("#messages .message")).to_have_count(0)
    await expect(page.locator("#task-list li")).to_have_count(0)


async def test_filter_delete_and_paginated_history(
    server: str, browser: Any, database_url: str
) -> None:
    conversation = uuid.uuid4()
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO conversations (id, user_id, title) VALUES (:id, 'gina', 'Long chat')"
            ),
            {"id": conversation},
        )
        await conn.execute(
            text(
                "INSERT INTO messages (conversation_id, user_id, role, content) "
                "VALUES (:c, 'gina', :role, :content)"
            ),
            [
                {
                    "c": conversation,
                    "role": "user" if n % 2 == 0 else "assistant",
                    "content": f"m{n}",
                }
                for n in range(120)
            ],
        )
    await engine.dispose()
    page = await new_page(browser)
    token = await sign_in(page, server, "gina")
    async with httpx.AsyncClient(base_url=server, headers=bearer(token)) as api:
        for title in ("Water plants", "Call mom"):
            assert (await api.post("/api/tasks", json={"title": title})).status_code == 201
        await api.patch("/api/tasks/1", json={"completed": True})

    # 120 messages come in three pages of 50; the page follows next_cursor to the end.
    await page.locator("#conversation-list .conversation-open", has_text="Long chat").click()
    await expect(page.locator("#messages .message")).to_have_count(120)
    await expect(page.locator("#messages .message .text").last).to_have_text("m119")

    await page.locator("#refresh-tasks").click()
    titles = page.locator("#task-list label")
    await expect(titles).to_have_count(2)
    await page.locator("#task-filter").select_option("pending")
    await expect(titles).to_have_text(["Call mom"])
    await page.locator("#task-filter").select_option("completed")
    await expect(titles).to_have_text(["Water plants"])
    await page.get_by_role("button", name="Delete task: Water plants").click()
    await expect(page.locator("#tasks-status")).to_have_text("Nothing completed yet.")

    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete conversation: Long chat").click()
    await expect(page.locator("#conversation-list li")).to_have_count(0)
    await expect(page.locator("#messages .message")).to_have_count(0)
    async with httpx.AsyncClient(base_url=server, headers=bearer(token)) as api:
        assert (await api.get(f"/api/conversations/{conversation}")).status_code == 404
        assert [t["title"] for t in (await api.get("/api/tasks")).json()["tasks"]] == ["Call mom"]


async def test_rate_limit_shows_a_live_countdown_and_keeps_the_message(
    server: str, browser: Any
) -> None:
    page = await new_page(browser)
    token = await sign_in(page, server, "carol")
    async with httpx.AsyncClient(base_url=server, headers=bearer(token)) as api:
        for _ in range(RATE_LIMIT):
            assert (await api.post("/api/chat", json={"message": "hi"})).status_code == 200

    async with page.expect_response("**/api/chat") as refused:
        await send(page, "add a task to buy milk")
    assert (await refused.value).status == 429
    await expect(page.locator("#chat-error")).to_contain_text("Too many messages")
    countdown = page.locator("#countdown")
    await expect(countdown).to_have_text(re.compile(r"^You can send again in \d+ s\.$"))
    first = int(re.findall(r"\d+", await countdown.inner_text())[0])
    assert 1 <= first <= 60
    await expect(countdown).to_have_text(f"You can send again in {first - 1} s.", timeout=3000)
    await expect(page.locator("#message")).to_have_value("add a task to buy milk")
    await expect(page.locator("#send")).to_be_disabled()
    await expect(page.locator("#messages .message")).to_have_count(0)


async def test_resend_after_a_network_error_reuses_the_idempotency_key(
    server: str, browser: Any
) -> None:
    page = await new_page(browser)
    token = await sign_in(page, server, "dave")
    keys: list[str] = []
    page.on(
        "request",
        lambda r: (
            keys.append(r.headers["idempotency-key"]) if r.url.endswith("/api/chat") else None
        ),
    )
    await page.route("**/api/chat", lambda route: route.abort("connectionreset"))
    await send(page, "add a task to buy milk")
    await expect(page.locator("#chat-error")).to_contain_text("Could not reach the server")
    await expect(page.locator("#chat-error")).to_contain_text("same Idempotency-Key")
    await expect(page.locator("#message")).to_have_value("add a task to buy milk")
    await page.unroute("**/api/chat")

    await page.locator("#send").click()
    await expect(page.locator("#task-list label")).to_have_text(["Buy milk"])
    # The list refreshes on tool_result, before the reply ends: wait for the turn to finish.
    await expect(page.locator("#messages")).not_to_have_attribute("aria-busy", "true")
    await page.locator("#message").fill("add a task to call mom")
    await page.locator("#send").click()
    await expect(page.locator("#task-list label")).to_have_count(2)
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2]
    async with httpx.AsyncClient(base_url=server, headers=bearer(token)) as api:
        assert len((await api.get("/api/tasks")).json()["tasks"]) == 2


async def test_nothing_overflows_at_375_px(server: str, browser: Any) -> None:
    page = await new_page(browser, viewport={"width": 375, "height": 740}, is_mobile=True)
    await page.goto(server + "/")
    assert await overflow(page) <= 0
    await sign_in(page, server, "erin-with-a-rather-long-user-name@example.com")
    await send(page, "add a task to " + "unbreakable" * 12)
    await expect(page.locator("#messages .message.assistant .chip.ok")).to_have_count(1)
    assert await overflow(page) <= 0
    await expect(page.locator("#tasks")).to_be_hidden()
    await page.get_by_role("button", name="Tasks", exact=True).click()
    await expect(page.locator("#task-list li")).to_have_count(1)
    assert await overflow(page) <= 0
    await page.get_by_role("button", name="Conversations", exact=True).click()
    await expect(page.locator("#conversation-list li")).to_have_count(1)
    assert await overflow(page) <= 0


async def test_dev_token_through_the_real_server(server: str) -> None:
    """uvicorn runs with proxy headers on: the endpoint still sees and refuses them."""
    async with httpx.AsyncClient(base_url=server) as api:
        for header in ({"X-Forwarded-For": "192.0.2.1"}, {"Forwarded": "for=192.0.2.1"}):
            refused = await api.post(
                "/api/dev/token", json={"user": "zoe"}, headers={**header, **login(server)}
            )
            assert refused.status_code == 403, header
        # Loopback host and origin but no secret, as a same-host reverse proxy would send it.
        loopback = {"Host": server.removeprefix("http://"), "Origin": server}
        refused = await api.post("/api/dev/token", json={"user": "zoe"}, headers=loopback)
        assert refused.status_code == 403
        signed = await api.post(
            "/api/dev/token", json={"user": "zoe"}, headers={**loopback, **login(server)}
        )
        assert signed.status_code == 200
        tasks = await api.get("/api/tasks", headers=bearer(signed.json()["token"]))
        assert tasks.json()["tasks"] == []


def _luminance(css_color: str) -> float:
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_color)[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


async def test_screenshots_light_and_dark(server: str, browser: Any, tmp_path: Path) -> None:
    update = os.environ.get("UPDATE_SCREENSHOTS") == "1"
    async with httpx.AsyncClient(base_url=server) as api:
        signed = await api.post("/api/dev/token", json={"user": "frank"}, headers=login(server))
        token = signed.json()["token"]
        api.headers.update(bearer(token))
        first = (await api.post("/api/chat", json={"message": "add a task to buy milk"})).json()
        cid = first["conversation_id"]
        await api.post(
            "/api/chat", json={"message": "add a task to call mom", "conversation_id": cid}
        )
        await api.post(
            "/api/chat", json={"message": "mark the milk task as done", "conversation_id": cid}
        )
        await api.post(
            "/api/tasks", json={"title": "Water the plants", "description": "Balcony first"}
        )

    shots = {
        "desktop": {"width": 1280, "height": 800},
        "mobile": {"width": 375, "height": 740},
    }
    backgrounds = {}
    for scheme in ("light", "dark"):
        for name, viewport in shots.items():
            page = await new_page(browser, viewport=viewport, color_scheme=scheme)
            await sign_in(page, server, "frank")
            if name == "mobile":
                await page.get_by_role("button", name="Conversations", exact=True).click()
            await page.locator("#conversation-list .conversation-open").click()
            await expect(page.locator("#messages .message")).to_have_count(6)
            if name == "desktop":
                await page.locator("#messages .chip summary").last.click()
            await page.locator("#messages").evaluate("log => { log.scrollTop = log.scrollHeight; }")
            await expect(page.locator("#task-list li")).to_have_count(3)
            await page.locator("#message").blur()
            backgrounds[scheme] = await page.evaluate(
                "getComputedStyle(document.body).backgroundColor"
            )
            target = SCREENSHOTS / f"{name}-{scheme}.png"
            if not (update or not target.exists()):
                target = tmp_path / target.name
            target.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(target))
            assert target.stat().st_size > 10_000
            await page.context.close()
    assert _luminance(backgrounds["light"]) > 200, backgrounds
    assert _luminance(backgrounds["dark"]) < 60, backgrounds


async def test_dev_sign_in_without_the_printed_address_explains_itself(
    server: str, browser: Any
) -> None:
    page = await new_page(browser)
    console = Console(page)
    await page.goto(server + "/")
    await page.locator("#dev-user").fill("mallory")
    await page.locator("#dev-user").press("Enter")
    await expect(page.locator("#signin-error")).to_contain_text("/?login=")
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    # A secret of another start (the server restarted): the server refuses, the page says why.
    await page.goto(server + "/?login=not-this-starts-secret")
    await expect(page).to_have_url(server + "/")
    await page.locator("#dev-user").fill("mallory")
    await page.locator("#dev-user").press("Enter")
    await expect(page.locator("#signin-error")).to_contain_text("a restart prints a new one")
    await expect(page.locator("#signin-error")).to_contain_text("HTTP 403")
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    assert [e for e in console.errors if "403" not in e] == []


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (502, "ai_provider_auth_failed", "refused this server's API key"),
        (502, "ai_model_not_found", "does not know the model"),
    ],
)
async def test_provider_faults_are_said_in_words(
    server: str, browser: Any, status: int, code: str, words: str
) -> None:
    page = await new_page(browser)
    await sign_in(page, server, f"grace-{code}")

    async def refuse(route: Any) -> None:
        body = {"detail": f"The server's detail for {code}", "code": code}
        await route.fulfill(status=status, json=body)

    await page.route("**/api/chat", refuse)
    await send(page, "add a task to buy milk")
    error = page.locator("#chat-error")
    await expect(error).to_contain_text(words)
    await expect(error).to_contain_text("Sending again will not help")
    await expect(error).to_contain_text(f"The server's detail for {code}")
    assert "moment" not in (await error.text_content() or "")


AXE = Path(__file__).with_name("vendor") / "axe.min.js"
"""axe-core, vendored (tests/system/vendor/README.md): nothing is fetched at test time."""


async def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now. Evaluated through the DevTools protocol,
    which the page's CSP (scripts from 'self' only) does not apply to."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text())
    results = await page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    return list(results["violations"])


def _serious(violations: list[dict[str, Any]]) -> list[str]:
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(node["target"]) for node in v["nodes"][:3])
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize(
    "viewport", [{"width": 1280, "height": 800}, {"width": 375, "height": 740}]
)
async def test_axe_finds_nothing_serious_signed_out_or_in(
    server: str, browser: Any, viewport: dict[str, int]
) -> None:
    page = await new_page(browser, viewport=viewport)
    await page.goto(server + "/")
    await expect(page.locator("#dev-user")).to_be_focused()
    signed_out = await axe_violations(page)
    assert _serious(signed_out) == [], signed_out

    user = f"axe-{viewport['width']}"
    await sign_in(page, server, user)
    await send(page, "add a task to buy milk")
    await expect(page.locator("#messages .message.assistant .chip.ok")).to_have_count(1)
    await expect(page.locator("#messages")).not_to_have_attribute("aria-busy", "true")
    await page.locator("#messages .chip summary").last.click()  # a chip opened, too
    await expect(page.locator("#conversation-list li")).to_have_count(1)
    await expect(page.locator("#task-list li")).to_have_count(1)
    signed_in = await axe_violations(page)
    assert _serious(signed_in) == [], signed_in


HIDDEN_BELOW = """() => {
  const log = document.getElementById("messages");
  const last = log.lastElementChild.getBoundingClientRect();
  return { px: last.bottom - log.getBoundingClientRect().bottom,
           scrollable: log.scrollHeight > log.clientHeight };
}"""
"""How many pixels of the conversation's last message are below the edge of the log."""


@pytest.mark.parametrize(
    "viewport", [{"width": 1280, "height": 800}, {"width": 375, "height": 740}]
)
async def test_an_opened_conversation_shows_its_last_message_whole(
    server: str, browser: Any, database_url: str, viewport: dict[str, int]
) -> None:
    """Opening a conversation scrolls to its end once the tool-call chips are in: they sit above
    an answer's text, and scrolling before they were drawn left the last 35 px hidden."""
    user = f"scroll-{viewport['width']}"
    conversation = uuid.uuid4()
    call = {"tool": "add_task", "arguments": {"title": "Water the plants"}}
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO conversations (id, user_id, title) VALUES (:id, :user, 'Plants')"),
            {"id": conversation, "user": user},
        )
        await conn.execute(
            text(
                "INSERT INTO messages (conversation_id, user_id, role, content, tool_calls) "
                "VALUES (:c, :user, :role, :content, CAST(:calls AS jsonb))"
            ),
            [
                {
                    "c": conversation,
                    "user": user,
                    "role": "user" if n % 2 == 0 else "assistant",
                    "content": f"add a task to water plant {n // 2}"
                    if n % 2 == 0
                    else f"Added 'Water plant {n // 2}' (task {n // 2 + 1}).",
                    "calls": None
                    if n % 2 == 0
                    else json.dumps([{**call, "result": {"id": n // 2 + 1, "status": "created"}}]),
                }
                for n in range(12)
            ],
        )
    await engine.dispose()
    page = await new_page(browser, viewport=viewport)
    await sign_in(page, server, user)
    if viewport["width"] < 860:
        await page.get_by_role("button", name="Conversations", exact=True).click()
    await page.locator("#conversation-list .conversation-open").click()
    await expect(page.locator("#messages .message")).to_have_count(12)
    await expect(page.locator("#messages .chip")).to_have_count(6)
    await page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    hidden = await page.evaluate(HIDDEN_BELOW)
    assert hidden["scrollable"], "the conversation should be longer than the log"
    assert hidden["px"] <= 0.5, f"{hidden['px']} px of the last message hidden below the log"
