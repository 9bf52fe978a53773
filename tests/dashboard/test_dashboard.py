"""The instructor dashboard, used as a person would: headless Chromium through the public port,
against the real stack (API, workers, Kafka, ingest)."""
import asyncio

from playwright.async_api import expect

from ..conftest import make_event

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


async def open_dashboard(browser, hub, user, *, lang="en", viewport=DESKTOP, roles=()):
    context = await browser.new_context(viewport=viewport, locale="en-US")
    await context.add_init_script(f"localStorage.setItem('notihub.lang', '{lang}')")
    page = await context.new_page()
    token = hub.token(user, name="Teacher Kim", roles=tuple(roles))
    await page.goto(f"{hub.url}/dashboard/?token={token}")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    return page


async def test_sign_in_live_notifications_and_kafka(browser, hub, shot, events):
    user = hub.new_user("teacher")
    await hub.publish([user], "comment.created", actor={"id": "s1", "name": "Lee"}, data={"comment_excerpt": "Hi!"})
    page = await open_dashboard(browser, hub, user, roles=("instructor",))
    # The token left the address bar.
    assert "token=" not in page.url
    badge = page.get_by_test_id("badge")
    await expect(badge).to_have_text("1")
    items = page.locator("#list li")
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text("Lee commented on your post")

    await hub.publish([user], "post.liked", actor={"id": "s2", "name": "Park"}, data={"post_title": "Graphs"})
    await expect(items).to_have_count(2)
    await expect(items.first).to_contain_text("Park liked your post")
    await expect(badge).to_have_text("2")

    # A domain event through Kafka and the ingest worker.
    await events.send(make_event("moderation.penalized", actor="mod", user={"id": user}, reason="spam"))
    await expect(items.first).to_contain_text("Your account has been restricted")
    await expect(badge).to_have_text("3")
    await shot(page, "desktop-inbox")
    await page.context.close()


async def test_mark_read_in_one_tab_updates_the_other(browser, hub, shot):
    user = hub.new_user("teacher")
    for i in range(3):
        await hub.publish([user], "post.liked", actor={"id": "s", "name": f"S{i}"}, data={"post_title": "P"})
    first = await open_dashboard(browser, hub, user)
    second = await open_dashboard(browser, hub, user)
    for page in (first, second):
        await expect(page.get_by_test_id("badge")).to_have_text("3")
    await first.locator("#list li").first.get_by_role("button", name="Mark “S2 liked your post” as read").click()
    await expect(second.get_by_test_id("badge")).to_have_text("2")
    await expect(second.locator("#list li.unread")).to_have_count(2)
    # Keyboard only: tab to "Mark all read" and press Enter.
    await second.get_by_test_id("mark-all").focus()
    await second.keyboard.press("Enter")
    await expect(first.get_by_test_id("badge")).to_have_text("0")
    await expect(first.locator("#list li.unread")).to_have_count(0)
    await shot(first, "desktop-all-read")
    # Delete one: both tabs drop it.
    await first.locator("#list li").first.get_by_role("button", name="Delete “S2 liked your post”").click()
    await expect(second.locator("#list li")).to_have_count(2)
    await first.context.close()
    await second.context.close()


async def test_language_switch_re_renders_everything(browser, hub, shot):
    user = hub.new_user("teacher")
    await hub.publish([user], "user.followed", actor={"id": "f", "name": "Lee"})
    page = await open_dashboard(browser, hub, user)
    item = page.locator("#list li").first
    await expect(item).to_contain_text("Lee started following you")
    await page.get_by_test_id("language").select_option("ko")
    await expect(item).to_contain_text("Lee님이 회원님을 팔로우하기 시작했습니다")
    await expect(page.get_by_test_id("mark-all")).to_have_text("모두 읽음으로 표시")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    assert await page.evaluate("document.documentElement.lang") == "ko"
    # New live ones come in Korean too.
    await hub.publish([user], "post.liked", actor={"id": "x", "name": "Kim"})
    await expect(page.locator("#list li").first).to_contain_text("Kim님이 회원님의 글을 좋아합니다")
    await shot(page, "desktop-korean")
    await page.context.close()


async def test_filter_and_infinite_scroll(browser, hub):
    user = hub.new_user("teacher")
    for i in range(45):
        type_ = "course.progressed" if i % 3 == 0 else "post.liked"
        await hub.publish([user], type_, actor={"id": "s", "name": f"S{i}"})
    page = await open_dashboard(browser, hub, user)
    items = page.locator("#list li")
    await expect(items).to_have_count(20)
    await page.locator("#sentinel").scroll_into_view_if_needed()
    await expect(items).to_have_count(40)
    await page.locator("#sentinel").scroll_into_view_if_needed()
    await expect(items).to_have_count(45)
    await expect(page.locator("#sentinel")).to_have_text("No older notifications.")
    await page.get_by_test_id("filter").select_option("course.progressed")
    await expect(items).to_have_count(15)
    for type_ in await items.evaluate_all("els => els.map(e => e.dataset.type)"):
        assert type_ == "course.progressed"
    await page.context.close()


async def test_instructor_sees_course_progress_live(browser, hub, shot, events):
    teacher, course = hub.new_user("teacher"), hub.new_user("course")
    await hub.request("PUT", f"/v1/topics/course:{course}:instructors/subscribers/{teacher}", service=True)
    page = await open_dashboard(browser, hub, teacher, roles=("instructor",))
    panel = page.get_by_test_id("courses")
    await expect(panel).to_be_visible()
    for student, name, lesson, progress in (("st1", "Min", "Intro", 0.25), ("st2", "Ahn", "Maps", 0.5),
                                            ("st1", "Min", "Loops", 0.6)):
        await events.send(make_event("course.progressed", actor=student, actor_name=name,
                                     course={"id": course, "title": "Go basics"},
                                     lesson={"id": lesson, "title": lesson}, progress=progress))
    row = panel.locator(".student[data-student='st1']")
    await expect(row).to_contain_text("60%")
    await expect(row).to_contain_text("Latest: Loops")
    await expect(panel.locator(".student")).to_have_count(2)
    assert await row.locator("progress").evaluate("p => p.value") == 60
    await shot(page, "desktop-instructor")
    await page.context.close()


async def test_reconnects_after_its_worker_dies_and_catches_up(browser, hub, shot, stack):
    user = hub.new_user("teacher")
    page = await open_dashboard(browser, hub, user)
    conn = page.get_by_test_id("connection")
    worker = (await conn.get_attribute("data-engine")).split(".", 1)[0]
    await hub.publish([user], "post.liked", actor={"id": "a", "name": "Before"})
    await expect(page.locator("#list li")).to_have_count(1)
    stack.kill_worker(worker)
    try:
        await expect(conn).to_have_attribute("data-state", "reconnecting")
        await shot(page, "desktop-reconnecting")
        # Published while the page had no socket.
        await hub.publish([user], "post.liked", actor={"id": "b", "name": "During"})
        await expect(conn).to_have_attribute("data-state", "connected", timeout=30_000)
        items = page.locator("#list li")
        await expect(items).to_have_count(2)
        await expect(items.first).to_contain_text("During liked your post")
        await hub.publish([user], "post.liked", actor={"id": "c", "name": "After"})
        await expect(items).to_have_count(3)
        titles = await items.evaluate_all("els => els.map(e => e.dataset.id)")
        assert len(titles) == len(set(titles))
        await expect(page.get_by_test_id("badge")).to_have_text("3")
    finally:
        await asyncio.to_thread(stack.restart_worker, worker)
    await page.context.close()


async def test_phone_layout_and_accessibility(browser, hub, shot):
    user = hub.new_user("teacher")
    await hub.publish([user], "comment.created", actor={"id": "s", "name": "Lee"},
                      data={"comment_excerpt": "A long comment that should wrap nicely on a small screen."})
    page = await open_dashboard(browser, hub, user, viewport=PHONE, roles=("instructor",))
    await expect(page.locator("#list li")).to_have_count(1)
    # Nothing overflows sideways on a phone.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # Every form control has a label, every button a name.
    unlabeled = await page.evaluate("""() => [...document.querySelectorAll('select, textarea, input')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map(el => el.id)""")
    assert unlabeled == []
    nameless = await page.evaluate("""() => [...document.querySelectorAll('button')]
        .filter(b => !b.hidden && !(b.textContent.trim() || b.getAttribute('aria-label'))).length""")
    assert nameless == 0
    await shot(page, "phone-inbox")
    await page.context.close()


async def test_refused_token_shows_the_sign_in_form(browser, hub, shot):
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    await page.goto(f"{hub.url}/dashboard/?token=not-a-token")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#signin-error")).to_have_text("The token was refused.")
    await shot(page, "desktop-sign-in")
    # Signing in with a good token from the form works.
    await page.get_by_test_id("token").fill(hub.token(hub.new_user()))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await context.close()
