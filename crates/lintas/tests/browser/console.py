"""The admin console in headless Chromium, driven by Playwright, against a running lintas.

Run by crates/lintas/tests/it/console.rs, which starts a node (proxy pool of two backend
processes, relay, watch, admin) and scratch PostgreSQL and MariaDB databases, and passes:

    console.py ADMIN_URL PASSWORD ARTIFACTS_DIR CHROMIUM PG_URL MYSQL_URL

The steps, in order; every check reads the DOM:

 1. the console sends a browser without a session to the login page; a wrong password is
    refused there with the API's message; the right one lands on the page asked for;
 2. an application is created and its key shown once (gone after a reload);
 3. a PostgreSQL destination whose connection test fails cannot be saved; fixed, it tests
    and saves; a MariaDB destination likewise; the PostgreSQL one is edited (tested again
    before Save, its password never shown);
 4. a route maps columns of the PostgreSQL table `orders`, picked from the live list, and one
    of the MariaDB table `orders`;
 5. the script prints {"event": "ingest", "key": KEY}; the test POSTs a record with curl and
    answers `ingested`; the delivery log shows it for both destinations with host and sent-at;
 6. {"event": "dead"}: the test posts a record PostgreSQL refuses (no email, NOT NULL), then
    answers `dead`; the log shows the dead letter; {"event": "fix"}: the test drops the
    constraint and answers `fixed`; Replay in the record's detail delivers it;
 7. a pool's strategy is changed and the page shows the node's new strategy;
 8. {"event": "kill", "backend": NAME}: the test SIGKILLs that backend and answers `killed`;
    the pools page shows it down;
 9. the host page draws the CPU graph with its percent axis and time labels;
10. logout ends the session: the console sends the browser back to the login page.

A screenshot of every page is saved in ARTIFACTS_DIR. Progress goes to stdout as JSON lines;
a failure is a traceback on stderr and exit status 1.
"""

import json
import re
import sys
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

# Waits for what should happen at once on an idle machine; generous for a loaded CI.
SOON_MS = 30_000


def say(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def answer(expected: str) -> None:
    line = sys.stdin.readline().strip()
    if line != expected:
        raise AssertionError(f"the test answered {line!r}, expected {expected!r}")


class Run:
    def __init__(self, page: Page, base: str, artifacts: Path):
        self.page = page
        self.base = base.rstrip("/")
        self.artifacts = artifacts
        self.shots = 0

    def shot(self, name: str) -> None:
        self.shots += 1
        self.page.screenshot(path=str(self.artifacts / f"{self.shots:02}-{name}.png"), full_page=True)

    def go(self, fragment: str) -> None:
        self.page.goto(f"{self.base}/console#/{fragment}")
        expect(self.page.locator("main#page")).to_have_attribute("data-page", fragment.split("?")[0], timeout=SOON_MS)


def until_shown(run: Run, fragment: str, row) -> None:
    """Opens `fragment` afresh (the log is read once per visit) until `row` is there."""
    for _ in range(30):
        run.go(fragment)
        run.page.reload()
        try:
            expect(row).to_be_attached(timeout=2_000)
            return
        except AssertionError:
            pass
    expect(row).to_be_attached(timeout=SOON_MS)


def login(run: Run, password: str) -> None:
    page = run.page
    page.goto(f"{run.base}/console#/relay/applications")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fconsole#/relay/applications$"), timeout=SOON_MS)
    page.fill("#password", "not the password")
    page.click("#submit")
    expect(page.locator("#error")).to_have_text("wrong user name or password", timeout=SOON_MS)
    run.shot("login-refused")
    page.fill("#password", password)
    page.click("#submit")
    expect(page).to_have_url(re.compile(r"/console#/relay/applications$"), timeout=SOON_MS)
    expect(page.locator("#who")).to_have_text("admin", timeout=SOON_MS)
    say("logged-in")


def application(run: Run) -> str:
    page = run.page
    page.fill("#app-name", "shop")
    page.click("#app-form button[type=submit]")
    key = page.locator("#key-value")
    expect(key).to_have_text(re.compile(r"^lk_[A-Za-z0-9_-]{20,}$"), timeout=SOON_MS)
    text = key.text_content()
    expect(page.locator('#app-table tr[data-application="shop"]')).to_be_visible(timeout=SOON_MS)
    run.shot("application-key-shown-once")
    page.reload()
    expect(page.locator('#app-table tr[data-application="shop"]')).to_be_visible(timeout=SOON_MS)
    expect(page.locator("#new-key")).to_be_hidden()
    assert text not in page.content(), "the key must not be shown again"
    say("application", key_prefix=text[:6])
    return text


def destination(run: Run, name: str, kind: str, bad_url: str, good_url: str) -> None:
    page = run.page
    page.fill("#dest-name", name)
    page.select_option("#dest-kind", kind)
    page.fill("#dest-url", bad_url)
    page.click("#dest-test")
    expect(page.locator("#dest-test-result")).to_have_text(
        "Test failed: fix the connection and test again.", timeout=SOON_MS)
    expect(page.locator("#dest-form .form-error")).to_contain_text(f"cannot connect to `{name}`")
    expect(page.locator("#dest-save")).to_be_disabled()
    run.shot(f"destination-{name}-test-failed")
    page.fill("#dest-url", good_url)
    expect(page.locator("#dest-save")).to_be_disabled()
    page.click("#dest-test")
    expect(page.locator("#dest-test-result")).to_contain_text("Connected: 1 table(s) — ", timeout=SOON_MS)
    expect(page.locator("#dest-save")).to_be_enabled()
    run.shot(f"destination-{name}-test-passed")
    page.click("#dest-save")
    row = page.locator(f'#dest-table tr[data-destination="{name}"]')
    expect(row).to_be_visible(timeout=SOON_MS)
    expect(row).to_have_attribute("data-state", "up", timeout=SOON_MS)
    say("destination", name=name)


def edit_destination(run: Run, name: str) -> None:
    """Edit: the form is filled from the list (no password shown), Save waits for a test."""
    page = run.page
    page.locator(f'#dest-table tr[data-destination="{name}"] button.edit').click()
    expect(page.locator("#dest-name")).to_have_value(name)
    expect(page.locator("#dest-password")).to_have_value("")
    expect(page.locator("#dest-save")).to_be_disabled()
    page.fill("#dest-max", "3")
    page.click("#dest-test")
    expect(page.locator("#dest-test-result")).to_contain_text("Connected: 1 table(s) — ", timeout=SOON_MS)
    page.click("#dest-save")
    expect(page.locator("#toast")).to_have_text(f"{name} saved", timeout=SOON_MS)
    expect(page.locator(f'#dest-table tr[data-destination="{name}"]')).to_have_attribute(
        "data-state", "up", timeout=SOON_MS)
    run.shot(f"destination-{name}-edited")
    say("edited", name=name)


def route(run: Run, dest: str, table: str) -> None:
    page = run.page
    page.select_option("#route-app", "shop")
    page.select_option("#route-dest", dest)
    # Picked from the live list: `orders` as the database names it (PostgreSQL with its
    # schema, MariaDB with its database).
    option = page.locator("#route-table option").filter(has_text=re.compile(rf"(^|\.){table}$"))
    expect(option).to_have_count(1, timeout=SOON_MS)
    page.select_option("#route-table", option.get_attribute("value"))
    for column, field in [("id", "id"), ("email", "email"), ("total", "total")]:
        page.fill(f'#column-map tr[data-column="{column}"] input.field', field)
    page.select_option("#route-op", "insert")
    page.click("#route-save")
    expect(page.locator("#route-table-list tbody tr", has_text=dest)).to_have_count(1, timeout=SOON_MS)
    run.shot(f"route-{dest}")
    say("route", destination=dest, table=table)


def delivery_log(run: Run, key: str) -> None:
    page = run.page
    say("ingest", key=key)
    answer("ingested")
    for dest, host in [("pg", "127.0.0.1:5432"), ("my", "127.0.0.1:3306")]:
        row = page.locator(f'#delivery-log tr[data-record="0"][data-destination="{dest}"]')
        until_shown(run, "relay/deliveries?application=shop", row)
        expect(row).to_have_attribute("data-status", "delivered", timeout=SOON_MS)
        expect(row.locator("td.host")).to_have_text(host)
        expect(row.locator("td.sent-at")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
        expect(row.locator("td.json").nth(0)).to_have_text('{"email":"ann@example.com","id":1,"note":"not routed","total":12.5}')
        expect(row.locator("td.json").nth(1)).to_contain_text('"email":"ann@example.com"')
    run.shot("delivery-log")
    say("delivered")


def replay(run: Run) -> None:
    page = run.page
    say("dead")
    answer("dead")
    row = page.locator('#delivery-log tr[data-record="1"][data-destination="pg"]')
    until_shown(run, "relay/deliveries?status=dead", row)
    expect(row).to_have_attribute("data-status", "dead", timeout=SOON_MS)
    row.locator("a.record-link").click()
    detail = page.locator('#record-deliveries tr[data-destination="pg"]')
    expect(detail).to_have_attribute("data-status", "dead", timeout=SOON_MS)
    run.shot("dead-letter")
    say("fix")
    answer("fixed")
    detail.locator("button.replay").click()
    expect(page.locator('#record-deliveries tr[data-destination="pg"]')).to_have_attribute(
        "data-status", "replayed", timeout=SOON_MS)
    run.shot("replayed")
    say("replayed")


def pools(run: Run, victim: str) -> None:
    page = run.page
    run.go("pools")
    section = page.locator('section.pool[data-pool="web"]')
    expect(section).to_have_attribute("data-strategy", "least_connections", timeout=SOON_MS)
    section.locator("select.strategy").select_option("round_robin")
    section.locator("form.inline button[type=submit]").first.click()
    expect(page.locator('section.pool[data-pool="web"]')).to_have_attribute(
        "data-strategy", "round_robin", timeout=SOON_MS)
    say("strategy", pool="web", strategy="round_robin")
    expect(page.locator(f'section.pool[data-pool="web"] tr[data-backend="{victim}"]')).to_have_attribute(
        "data-state", "up", timeout=SOON_MS)
    say("kill", backend=victim)
    answer("killed")
    expect(page.locator(f'section.pool[data-pool="web"] tr[data-backend="{victim}"]')).to_have_attribute(
        "data-state", "down", timeout=SOON_MS)
    run.shot("pools-backend-down")
    say("down", backend=victim)


def host(run: Run) -> None:
    page = run.page
    run.go("watch/host")
    cpu = page.locator("#graph-cpu")
    expect(cpu).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"), timeout=SOON_MS)
    expect(cpu).to_have_attribute("data-unit", "%")
    expect(cpu).to_have_attribute("data-y-labels", "0 %|50 %|100 %")
    expect(cpu).to_have_attribute("data-x-labels", re.compile(r"^\d\d:\d\d(\|\d\d:\d\d){5}$"))
    run.shot("host")
    say("graph", points=cpu.get_attribute("data-points"))


def every_page(run: Run) -> None:
    for fragment in ["overview", "pools", "relay/applications", "relay/destinations", "relay/routes",
                     "relay/deliveries", "watch/targets", "watch/host", "watch/alerts", "watch/people"]:
        run.go(fragment)
        run.page.wait_for_timeout(1000)
        run.shot(fragment.replace("/", "-"))


def main() -> None:
    base, password, artifacts, chromium, pg_url, my_url = sys.argv[1:7]
    artifacts = Path(artifacts)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        run = Run(page, base, artifacts)
        try:
            login(run, password)
            key = application(run)
            run.go("relay/destinations")
            destination(run, "pg", "postgres", re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:1", pg_url), pg_url)
            destination(run, "my", "mysql", re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:1", my_url), my_url)
            edit_destination(run, "pg")
            run.go("relay/routes")
            route(run, "pg", "orders")
            route(run, "my", "orders")
            delivery_log(run, key)
            replay(run)
            pools(run, "b2")
            host(run)
            every_page(run)
            page.click("#logout")
            expect(page).to_have_url(re.compile(r"/login$"), timeout=SOON_MS)
            page.goto(f"{run.base}/console#/pools")
            expect(page).to_have_url(re.compile(r"/login\?next="), timeout=SOON_MS)
            say("logged-out")
        except Exception:
            run.shot("failure")
            raise
        finally:
            browser.close()
        if errors:
            raise AssertionError(f"script errors on the pages: {errors}")
    say("done")


if __name__ == "__main__":
    main()
