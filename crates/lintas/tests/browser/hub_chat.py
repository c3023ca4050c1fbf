"""The hub's chat page in headless Chromium, driven by Playwright: two users on two nodes.

Run by crates/lintas/tests/it/hub_chat.rs, which starts two hub nodes behind a lintas
HTTP listener and passes its URL:

    hub_chat.py URL ARTIFACTS_DIR CHROMIUM

Pages A (alice) and B (bob) live in browser contexts of their own, so each has its own
WebSocket. Both go through the balancer; B is opened again until the page says it is on
the other node than A. They exchange a room message and a direct message, then B's node
is killed: the script prints {"event": "kill", "node": NAME} and the test answers with a
line `killed` once the process is gone. B's context is put offline just before, so B's
reconnections fail until the script puts it back online: A's three messages are then
certainly sent while B is away, and A sees B leave once the hub expires the dead node's
presence. Back online, B reconnects through the balancer to the node left and must show
the three messages, marked recovered; A sees B back.

Every check reads the DOM; a screenshot of each page is saved after each step (and on a
failure) in ARTIFACTS_DIR. Progress goes to stdout as JSON lines; a failure is a traceback
on stderr and exit status 1.
"""

import json
import sys
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

# Waits for what should happen at once on an idle machine; generous for a loaded CI.
SOON_MS = 20_000
# A dead node's users leave within the hub's presence_timeout (the test sets a short one).
PRESENCE_MS = 30_000
# How many times B is opened again to land on the other node.
PLACEMENT_TRIES = 8


def say(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Run:
    def __init__(self, url: str, artifacts: Path):
        self.url = url.rstrip("/")
        self.artifacts = artifacts
        self.step = 0
        self.pages: dict[str, Page] = {}
        self.errors: list[str] = []

    def open(self, browser, label: str, name: str) -> Page:
        """A page in a context of its own, connected as `name`."""
        context = browser.new_context(viewport={"width": 1100, "height": 650})
        page = context.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"{label}: {e}"))
        page.goto(self.url + "/chat")
        page.fill("#name", name)
        page.click("#connect")
        expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=SOON_MS)
        self.pages[label] = page
        return page

    def shoot(self, what: str) -> None:
        self.step += 1
        for label, page in self.pages.items():
            page.screenshot(path=str(self.artifacts / f"{self.step:02d}-{what}-{label}.png"))
        say("step", step=what)

    def check_no_page_errors(self) -> None:
        assert not self.errors, "uncaught errors in the page: " + "; ".join(self.errors)


def node_of(page: Page) -> str:
    return page.locator("#status").get_attribute("data-node")


def join(page: Page, room: str, me: str) -> None:
    page.fill("#room", room)
    page.click("#join")
    expect(page.locator(f'#rooms [data-key="room:{room}"]')).to_be_visible()
    expect(person(page, me)).to_be_visible(timeout=SOON_MS)


def person(page: Page, user: str):
    return page.locator(f'#presence [data-testid="person"][data-user="{user}"]')


def messages(page: Page, text: str):
    return page.locator('#messages [data-testid="message"]').filter(has_text=text)


def say_in(page: Page, text: str) -> None:
    expect(page.locator("#send")).to_be_enabled(timeout=SOON_MS)
    page.fill("#text", text)
    page.press("#text", "Enter")
    expect(page.locator("#text")).to_have_value("", timeout=SOON_MS)


def nudge_balancer(url: str) -> None:
    """One request through the balancer, so the next page load starts from the other node."""
    with urllib.request.urlopen(url + "/chat", timeout=10) as reply:
        reply.read()


def scenario(run: Run, browser) -> None:
    a = run.open(browser, "a", "alice")
    node_a = node_of(a)
    join(a, "lobby", "~alice")

    seen = []
    while True:
        b = run.open(browser, "b", "bob")
        seen.append(node_of(b))
        if seen[-1] != node_a or len(seen) == PLACEMENT_TRIES:
            break
        b.context.close()
        nudge_balancer(run.url)
    node_b = seen[-1]
    assert node_b != node_a, f"B stayed on A's node {node_a} after {len(seen)} tries: {seen}"
    say("placed", a=node_a, b=node_b, tries=len(seen))
    expect(a.locator("#status")).to_contain_text(f"node {node_a}")
    expect(b.locator("#status")).to_contain_text(f"node {node_b}")
    join(b, "lobby", "~bob")
    run.shoot("connected-on-two-nodes")

    expect(person(a, "~bob")).to_be_visible(timeout=SOON_MS)
    expect(person(b, "~alice")).to_be_visible()
    run.shoot("presence")

    say_in(a, "hello from alice")
    expect(messages(b, "hello from alice")).to_have_count(1, timeout=SOON_MS)
    expect(messages(b, "hello from alice").locator(".name")).to_have_text("alice")
    expect(messages(a, "hello from alice")).to_have_count(1, timeout=SOON_MS)
    run.shoot("room-message")

    b.locator(f'#presence [data-user="~alice"] button').click()
    expect(b.locator("#title")).to_have_text("alice")
    say_in(b, "psst, alice")
    expect(messages(b, "psst, alice")).to_have_count(1, timeout=SOON_MS)
    expect(b.locator('#messages [data-kind="undelivered"]')).to_have_count(0)
    direct = a.locator('#directs [data-key="user:~bob"]')
    expect(direct).to_be_visible(timeout=SOON_MS)
    expect(direct).to_have_class("unread")
    direct.click()
    expect(a.locator("#title")).to_have_text("bob")
    expect(messages(a, "psst, alice")).to_have_count(1)
    expect(messages(a, "psst, alice").locator(".name")).to_have_text("bob")
    expect(messages(a, "hello from alice")).to_have_count(0)
    run.shoot("direct-message")

    a.click('#rooms [data-key="room:lobby"]')
    b.click('#rooms [data-key="room:lobby"]')
    b.context.set_offline(True)
    say("kill", node=node_b)
    answer = sys.stdin.readline().strip()
    assert answer == "killed", f"the test answered {answer!r} to the kill"
    expect(b.locator("#status")).to_have_attribute("data-state", "reconnecting", timeout=SOON_MS)

    away = [f"while bob is away {i}" for i in (1, 2, 3)]
    for text in away:
        say_in(a, text)
    for text in away:
        expect(messages(a, text)).to_have_count(1, timeout=SOON_MS)
    expect(person(a, "~bob")).to_have_count(0, timeout=PRESENCE_MS)
    expect(a.locator('#messages [data-kind="left"]').filter(has_text="bob left")).to_have_count(1)
    run.shoot("node-killed-bob-away")
    for text in away:
        expect(messages(b, text)).to_have_count(0)

    b.context.set_offline(False)
    expect(b.locator("#status")).to_have_attribute("data-state", "connected", timeout=SOON_MS)
    assert node_of(b) == node_a, f"B came back on {node_of(b)}, not on the node left ({node_a})"
    recovered = b.locator('#messages [data-kind="recovered"]')
    expect(recovered).to_have_count(1, timeout=SOON_MS)
    expect(recovered).to_contain_text("recovered 3 messages")
    for text in away:
        expect(messages(b, text)).to_have_count(1)
        expect(messages(b, text)).to_have_attribute("data-recovered", "true")
    expect(messages(b, "hello from alice")).to_have_count(1)
    expect(messages(b, "hello from alice")).to_have_attribute("data-recovered", "false")
    expect(b.locator('#messages [data-kind="history-lost"]')).to_have_count(0)
    expect(person(b, "~alice")).to_be_visible()
    expect(person(a, "~bob")).to_be_visible(timeout=SOON_MS)
    # Once when B first joined, once now.
    expect(a.locator('#messages [data-kind="joined"]').filter(has_text="bob joined")).to_have_count(2)
    run.shoot("bob-recovered")

    say_in(b, "bob is back")
    expect(messages(a, "bob is back")).to_have_count(1, timeout=SOON_MS)
    run.shoot("after-recovery")
    run.check_no_page_errors()


def main() -> int:
    url, artifacts, chromium = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob("*.png"):
        old.unlink()
    run = Run(url, artifacts)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            scenario(run, browser)
        except BaseException:
            for label, page in run.pages.items():
                if not page.is_closed():
                    page.screenshot(path=str(artifacts / f"failure-{label}.png"))
            if run.errors:
                print("uncaught errors in the pages: " + "; ".join(run.errors), file=sys.stderr)
            raise
        finally:
            browser.close()
    say("done", screenshots=sorted(str(p) for p in artifacts.glob("*.png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
