"""The web app's pages in Chromium: a 390 px phone, the keyboard, output formats, upload progress, honest states.

Shares the stack (gearmand, a worker, the web app) of ``test_web_browser``.
Screenshots of every page at 390 px go to ``artifacts/screenshots/*-phone.png``.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, ViewportSize, expect
from test_web_browser import SHOTS, WAIT_MS, Stack, browser, page, photo, shot, stack, wait_for_js

pytestmark = pytest.mark.browser
__all__ = ["browser", "page", "stack"]  # fixtures shared with test_web_browser

PHONE: ViewportSize = {"width": 390, "height": 844}


def no_sideways_scroll(p: Page) -> None:
    width = p.evaluate("document.scrollingElement.scrollWidth")
    assert width <= PHONE["width"], f"{p.url}: the page is {width} px wide"


def inside_screen(p: Page, selector: str) -> None:
    box = p.locator(selector).bounding_box()
    assert box is not None and p.locator(selector).is_visible(), f"{selector} is not shown"
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], f"{selector} is cut off: {box}"


def transparent_png(path: Path) -> Path:
    image = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
    for x in range(150, 450):
        for y in range(100, 300):
            image.putpixel((x, y), (220, 40, 40, 255))
    image.save(path, "PNG")
    return path


def test_every_page_fits_a_390_px_phone(stack: Stack, browser: Browser, tmp_path: Path) -> None:
    """No sideways scroll on any page; the Servers tab, the status dot and the jobs' results stay on screen."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    try:
        p.goto(f"{stack.url}/#photos")
        p.set_input_files("#file-input", str(photo(tmp_path / "phone.jpg", 1600, 1200, 70)))
        expect(p.locator(".photo", has_text="phone.jpg")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        wait_for_js(p, "[...document.querySelectorAll('.copy img')].every(i => i.complete)")
        no_sideways_scroll(p)
        inside_screen(p, "#tab-servers")
        inside_screen(p, "#conn .dot")
        p.screenshot(path=str(SHOTS / "photos-phone.png"), full_page=True)

        p.goto(f"{stack.url}/#jobs")
        expect(p.locator("#function option[value=reverse]")).to_have_count(1)
        p.select_option("#function", "reverse")
        p.fill("#payload", "a long line of text that a phone must wrap instead of widening the page " * 3)
        p.click("#submit")
        result = p.locator('#job-rows tr[data-state="done"] .result').first
        expect(result).to_be_visible()
        no_sideways_scroll(p)
        inside_screen(p, '#job-rows tr[data-state="done"] .result >> nth=0')
        p.screenshot(path=str(SHOTS / "jobs-phone.png"), full_page=True)

        p.goto(f"{stack.url}/#servers")
        expect(p.locator("section.server .badge").first).to_have_text("up")
        no_sideways_scroll(p)
        inside_screen(p, "#tab-servers")
        p.screenshot(path=str(SHOTS / "servers-phone.png"), full_page=True)

        p.goto(f"{stack.url}/login")  # shown only when a password is set, but it must fit too
        no_sideways_scroll(p)
        p.screenshot(path=str(SHOTS / "login-phone.png"), full_page=True)
    finally:
        context.close()


def test_a_transparent_png_keeps_its_alpha_and_the_format_choice_is_honoured(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    page.goto(f"{stack.url}/#photos")
    page.set_input_files("#file-input", str(transparent_png(tmp_path / "logo.png")))
    logo = page.locator(".photo", has_text="logo.png")
    expect(logo).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(logo.locator(".copy-meta .muted").first).to_contain_text("PNG")
    url = logo.locator(".copy img").first.get_attribute("src")
    copy = Image.open(io.BytesIO(page.request.get(f"{stack.url}{url}").body()))
    assert copy.format == "PNG" and copy.mode == "RGBA"
    corner = copy.getpixel((0, 0))
    assert isinstance(corner, tuple) and corner[3] == 0  # the corner is still transparent, not white or black

    for choice, shown in (("webp", "WEBP"), ("avif", "AVIF")):
        page.select_option("#format", choice)
        name = f"as-{choice}.jpg"
        page.set_input_files("#file-input", str(photo(tmp_path / name, 640, 480, 10)))
        card = page.locator(".photo", has_text=name)
        expect(card).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        expect(card.locator(".copy-meta .muted")).to_contain_text([shown] * 2)  # 640 px and 512, 256 copies...
        src = card.locator(".copy img").first.get_attribute("src")
        assert page.request.get(f"{stack.url}{src}").headers["content-type"] == f"image/{choice}"
    shot(page, "photos-formats")
    logo_id = logo.get_attribute("data-photo")
    logo.get_by_role("button", name="Delete logo.png").click()
    expect(logo).to_have_count(0)
    assert page.request.get(f"{stack.url}{url}").status == 404
    assert logo_id not in {p["id"] for p in page.request.get(f"{stack.url}/api/photos").json()["photos"]}


def test_upload_progress_comes_from_the_upload_itself(stack: Stack, page: Page, tmp_path: Path) -> None:
    """At 2 Mbit/s upload, the bar (a labelled <progress>) climbs while the photo is still being sent."""
    big = photo(tmp_path / "slow-upload.jpg", 3000, 2000, 150)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 250_000},
    )
    page.goto(f"{stack.url}/#photos")
    page.evaluate("""() => { window.__uploading = [];
        new MutationObserver(() => {
            const bar = document.querySelector('.photo[data-state="uploading"] progress');
            if (bar) window.__uploading.push([bar.value, bar.getAttribute('aria-label')]);
        }).observe(document.getElementById('photo-list'), {attributes: true, subtree: true, childList: true}); }""")
    page.set_input_files("#file-input", str(big))
    card = page.locator(".photo", has_text="slow-upload.jpg")
    expect(card).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    seen = page.evaluate("window.__uploading")
    values = [v for v, _ in seen]
    assert any(0 < v < 99 for v in values), values  # intermediate values: real XHR progress events
    assert {label for _, label in seen} == {"Upload of slow-upload.jpg"}
    expect(page.get_by_role("progressbar", name="Resizing of slow-upload.jpg")).to_have_count(1)


def test_keyboard_focus_is_visible_and_the_file_input_is_no_extra_tab_stop(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.url}/#photos")
    expect(page.locator("#conn")).to_have_class("conn ok")
    stops = []
    for _ in range(10):
        page.keyboard.press("Tab")
        stops.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert "file-input" not in stops
    assert stops.index("format") < stops.index("drop")  # the format choice, then the drop zone
    page.focus("#drop")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # focus by keyboard, so :focus-visible applies
    outline = page.evaluate("""() => { const s = getComputedStyle(document.getElementById('drop'));
                                       return [s.outlineStyle, parseFloat(s.outlineWidth)]; }""")
    assert outline[0] != "none" and outline[1] >= 2, outline
    shot(page, "photos-focus")


def test_a_job_without_a_worker_says_so_and_can_be_cancelled(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.url}/#jobs")
    expect(page.locator("#function option[value=echo]")).to_have_count(1)
    page.evaluate("""() => { const o = document.createElement('option'); o.value = o.textContent = 'nobody_serves';
                             document.getElementById('function').append(o); }""")  # a name no worker has
    page.select_option("#function", "nobody_serves")
    page.click("#submit")
    row = page.locator("#job-rows tr", has_text="nobody_serves")
    expect(row.locator(".badge")).to_have_text("Waiting for a worker")
    shot(page, "jobs-waiting")
    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_attribute("data-state", "cancelled")
    expect(row.locator(".result.error")).to_have_text("Cancelled: the job server was asked to drop the queued job.")
