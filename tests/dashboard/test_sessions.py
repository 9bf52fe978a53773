"""The dashboard when its token ends (session_expired, token_expired) and under the API's
security headers: headless Chromium through the public port, against the real stack."""
import asyncio
import time

from playwright.async_api import expect

from api_server.security import SECURITY_HEADERS
from shared.tokens import mint

from ..security.rawio import RawSocket
from .test_dashboard import DESKTOP

# A token this short-lived outlives loading the page and its first connection, then ends.
SHORT_TTL = 6
EXPIRED_PROMPT = "#signin-error[data-reason='session_expired']"

# Collects what the page's Content-Security-Policy refused, from before any of its own scripts run.
CSP_RECORDER = """
window.__cspViolations = [];
window.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push({directive: e.violatedDirective, blocked: e.blockedURI,
                               source: e.sourceFile, line: e.lineNumber, sample: e.sample});
}, true);
"""
# Every text the connection indicator shows, in order (some last only a moment).
CONNECTION_RECORDER = """
window.__connTexts = [];
document.addEventListener("DOMContentLoaded", () => {
  const text = document.getElementById("conn-text");
  new MutationObserver(() => window.__connTexts.push(text.textContent))
    .observe(text, {childList: true, characterData: true, subtree: true});
});
"""


async def new_page(browser, *, lang="en"):
    context = await browser.new_context(viewport=DESKTOP, locale="en-US")
    await context.add_init_script(f"localStorage.setItem('notihub.lang', '{lang}')")
    return await context.new_page()


async def titles(page) -> list[str]:
    return await page.locator("#list li .title").all_text_contents()


async def open_with_short_token(page, hub, user, query=""):
    """Sign the dashboard in with a token that expires in SHORT_TTL s; it shows one notification."""
    short = hub.token(user, name="Teacher Kim", ttl=SHORT_TTL)
    await page.goto(f"{hub.url}/dashboard/?token={short}{query}")
    conn = page.get_by_test_id("connection")
    await expect(conn).to_have_attribute("data-state", "connected")
    items = page.locator("#list li")
    await expect(items).to_have_count(1)
    return conn, items


async def test_expired_session_asks_for_a_token_and_replays_what_was_missed(browser, hub, shot):
    user = hub.new_user("teacher")
    await hub.publish([user], "post.liked", actor={"id": "a", "name": "Early"})
    page = await new_page(browser)
    conn, items = await open_with_short_token(page, hub, user)
    await hub.publish([user], "post.liked", actor={"id": "b", "name": "Live"})
    await expect(items).to_have_count(2)
    socket_id = await page.evaluate("window.notihubDashboard.socket.id")

    # The token ends: the form asks for a new one, and the list stays.
    prompt = page.locator(EXPIRED_PROMPT)
    await expect(prompt).to_be_visible(timeout=SHORT_TTL * 1000 + 15_000)
    await expect(prompt).to_have_text(
        "Your session expired. Paste a new token to continue: the notifications you missed will follow.")
    await expect(conn).to_have_attribute("data-state", "expired")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#app")).to_be_visible()
    await expect(items).to_have_count(2)
    await shot(page, "desktop-session-expired")

    # Published while the page has no socket.
    await hub.publish([user], "post.liked", actor={"id": "c", "name": "Missed"})
    await page.evaluate("window.__sameSocket = window.notihubDashboard.socket")
    await page.get_by_test_id("token").fill(hub.token(user, name="Teacher Kim"))
    await page.get_by_role("button", name="Sign in").click()
    await expect(conn).to_have_attribute("data-state", "connected")
    await expect(page.locator("#signin")).to_be_hidden()
    await expect(items).to_have_count(3)
    await expect(items.first).to_contain_text("Missed liked your post")
    # The same socket connected again (a new session id), with since: nothing twice.
    assert await page.evaluate("window.__sameSocket === window.notihubDashboard.socket")
    assert await page.evaluate("window.notihubDashboard.socket.id") != socket_id
    # A live one after the replay: by then the replay is complete.
    await hub.publish([user], "post.liked", actor={"id": "d", "name": "After"})
    await expect(items).to_have_count(4)
    assert await titles(page) == ["After liked your post", "Missed liked your post",
                                  "Live liked your post", "Early liked your post"]
    await expect(page.get_by_test_id("badge")).to_have_text("4")
    await page.context.close()


async def test_token_url_renews_the_session_by_itself(browser, hub):
    user = hub.new_user("teacher")
    await hub.publish([user], "post.liked", actor={"id": "a", "name": "Early"})
    page = await new_page(browser)
    fresh = hub.token(user, name="Teacher Kim")
    asked: asyncio.Future = asyncio.get_running_loop().create_future()
    answer = asyncio.Event()

    async def token_endpoint(route):
        # Holds the answer until the test has published, so that the notification falls in the gap.
        if not asked.done():
            asked.set_result(route.request)
        await answer.wait()
        await route.fulfill(status=200, json={"token": fresh})

    await page.route(f"{hub.url}/test-token", token_endpoint)
    conn, items = await open_with_short_token(page, hub, user, "&token_url=/test-token")

    request = await asyncio.wait_for(asked, timeout=SHORT_TTL + 15)
    assert request.method == "GET"
    await expect(conn).to_have_attribute("data-state", "reconnecting")
    await expect(page.get_by_test_id("connection")).to_have_text("Renewing the session…")
    await hub.publish([user], "post.liked", actor={"id": "b", "name": "Meanwhile"})
    answer.set()

    await expect(conn).to_have_attribute("data-state", "connected")
    await expect(items).to_have_count(2)
    await expect(items.first).to_contain_text("Meanwhile liked your post")
    # Renewed without asking anybody, and the page now holds the fresh token.
    await expect(page.locator("#signin")).to_be_hidden()
    assert await page.evaluate("window.notihubDashboard.state.token") == fresh
    await hub.publish([user], "post.liked", actor={"id": "c", "name": "After"})
    await expect(items).to_have_count(3)
    assert await titles(page) == ["After liked your post", "Meanwhile liked your post", "Early liked your post"]
    await page.context.close()


async def test_expired_token_at_the_handshake_asks_in_korean_and_ignores_a_foreign_token_url(browser, hub):
    user = hub.new_user("teacher")
    await hub.publish([user], "post.liked", actor={"id": "a", "name": "Kim"})
    page = await new_page(browser, lang="ko")
    foreign = []
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(hub.url) else None)
    expired = mint(hub.settings, sub=user, ttl=60, now=time.time() - 120)
    # "//host/…" is another origin: the page must never fetch a token from there.
    await page.goto(f"{hub.url}/dashboard/?token={expired}&token_url=//evil.example/token")
    prompt = page.locator(EXPIRED_PROMPT)
    await expect(prompt).to_have_text(
        "세션이 만료되었습니다. 계속하려면 새 토큰을 붙여 넣으세요. 그동안 놓친 알림도 이어서 표시됩니다.")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "expired")
    await page.get_by_test_id("token").fill(hub.token(user))
    await page.get_by_role("button", name="로그인").click()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#list li").first).to_contain_text("Kim님이 회원님의 글을 좋아합니다")
    assert foreign == []
    await page.context.close()


async def test_a_token_url_that_gives_expired_tokens_is_asked_once(browser, hub):
    user = hub.new_user("teacher")
    page = await new_page(browser)
    calls = []

    async def stale_tokens(route):
        calls.append(route.request.url)
        await route.fulfill(json={"token": mint(hub.settings, sub=user, ttl=60, now=time.time() - 120)})

    await page.route(f"{hub.url}/test-token", stale_tokens)
    stale = mint(hub.settings, sub=user, ttl=60, now=time.time() - 120)
    await page.goto(f"{hub.url}/dashboard/?token={stale}&token_url=/test-token")
    # Its token is refused too: the page asks the person rather than fetching again and again.
    await expect(page.locator(EXPIRED_PROMPT)).to_be_visible()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "expired")
    assert calls == [f"{hub.url}/test-token"]
    await page.get_by_test_id("token").fill(hub.token(user))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await page.context.close()


async def _watched_page(browser):
    page = await new_page(browser)
    await page.add_init_script(CSP_RECORDER)
    messages = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    return page, messages


def assert_security_headers(headers: dict[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name.lower()) == value, name


async def test_dashboard_runs_under_the_content_security_policy(browser, hub):
    user = hub.new_user("teacher")
    await hub.publish([user], "comment.created", actor={"id": "s", "name": "Lee"}, url="/posts/1",
                      data={"comment_excerpt": "Hi!"})
    page, messages = await _watched_page(browser)
    response = await page.goto(f"{hub.url}/dashboard/?token={hub.token(user, roles=('instructor',))}")
    assert_security_headers(await response.all_headers())
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#list li")).to_have_count(1)
    await expect(page.get_by_test_id("courses")).to_be_visible()
    await page.get_by_test_id("language").select_option("ko")
    await expect(page.get_by_test_id("mark-all")).to_have_text("모두 읽음으로 표시")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    assert await page.evaluate("window.__cspViolations") == []
    assert [m for m in messages if not m.startswith(("log:", "debug:", "info:"))] == []
    await page.context.close()


async def test_api_docs_run_under_the_content_security_policy(browser, hub):
    page, messages = await _watched_page(browser)
    response = await page.goto(f"{hub.url}/docs")
    assert_security_headers(await response.all_headers())
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("notihub")
    # Open an operation: its parameters, schemas and examples render too.
    operation = page.locator(".opblock").first
    await operation.locator(".opblock-summary").click()
    await expect(operation.locator(".opblock-body")).to_be_visible()
    await expect(operation.locator(".opblock-body .responses-wrapper")).to_be_visible()
    assert await page.evaluate("window.__cspViolations") == []
    assert [m for m in messages if not m.startswith(("log:", "debug:", "info:"))] == []
    await page.context.close()

# Resolves once the page's socket was refused as rate_limited or connected. (Not
# page.wait_for_function: it evaluates its predicate with eval, which the page's CSP forbids.)
REFUSED_OR_CONNECTED = """() => new Promise((resolve) => {
  const check = () => {
    if (window.__connTexts.some((t) => t.startsWith("Too many"))) resolve("refused");
    else if (window.notihubDashboard.socket.connected) resolve("connected");
    else setTimeout(check, 10);
  };
  check();
})"""


async def use_up_handshakes(raw: RawSocket, token: str) -> dict:
    """Handshakes of the token's user until the server refuses one as rate_limited: its data."""
    for _ in range(5000):
        kind, data = await raw.join({"token": token})
        if kind == "connect":
            await raw.send("41/notifications,")
            continue
        data = data.get("data", data)
        assert data["code"] == "rate_limited", data
        return data
    raise AssertionError("the server never refused a handshake as rate_limited")


async def test_rate_limited_handshake_waits_and_connects_again(browser, hub):
    user = hub.new_user("teacher")
    await hub.publish([user], "post.liked", actor={"id": "a", "name": "Early"})
    page = await new_page(browser)
    await page.add_init_script(CONNECTION_RECORDER)
    await page.goto(f"{hub.url}/dashboard/?token={hub.token(user)}")
    conn = page.get_by_test_id("connection")
    await expect(conn).to_have_attribute("data-state", "connected")
    items = page.locator("#list li")
    await expect(items).to_have_count(1)

    raw = await RawSocket.open(hub.http, hub.url)
    try:
        # The user's handshakes are used up; the page connects again at once. (The allowance
        # refills as time passes: should the page's handshake win a freed one, try again.)
        for _ in range(5):
            await page.evaluate("window.__connTexts.length = 0")
            refusal = await use_up_handshakes(raw, hub.token(user))
            await page.evaluate("() => { const s = window.notihubDashboard.socket; s.disconnect(); s.connect(); }")
            if await asyncio.wait_for(page.evaluate(REFUSED_OR_CONNECTED), timeout=20) == "refused":
                break
        else:
            raise AssertionError("the page's handshake was never refused")
    finally:
        await raw.ws.close()
    wait = refusal["retry_after"]
    assert f"Too many connection attempts: trying again in {wait} s…" in await page.evaluate("window.__connTexts")
    # Still signed in; after retry_after it connects by itself, the list as it was.
    await expect(page.locator("#signin")).to_be_hidden()
    await expect(conn).to_have_attribute("data-state", "connected", timeout=wait * 1000 + 15_000)
    assert await page.evaluate("window.notihubDashboard.socket.id")
    await expect(items).to_have_count(1)
    await hub.publish([user], "post.liked", actor={"id": "b", "name": "Later"})
    await expect(items).to_have_count(2)
    await page.context.close()
