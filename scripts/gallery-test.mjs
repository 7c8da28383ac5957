// The review page in a real browser (Debian's Chromium, driven by playwright-core): every
// thumbnail decodes, the status filter and the folder filter show what they say, keyboard
// navigation moves the focus and toggles before/after, a flag lands in the rerun list, and
// the flags survive a reload. Saves a screenshot. Run by scripts/gallery-test.sh.
//
//   node scripts/gallery-test.mjs PAGE.html REPORT.ndjson SCREENSHOT.png [BIG.html]
// BIG.html: a gallery of 10,000 images, which must open on its first page of cards and page.
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const require = createRequire(process.env.PLAYWRIGHT_CORE_DIR + "/");
const { chromium } = require("playwright-core");
const [page_path, report_path, shot, big_path] = process.argv.slice(2);
const records = new Map();
for (const line of readFileSync(report_path, "utf8").split("\n")) {
  if (line.trim()) { const r = JSON.parse(line); records.set(r.path, r); }
}
const fail = (msg) => { console.error("gallery-test: FAILED: " + msg); process.exit(1); };
const check = (cond, msg) => { if (!cond) fail(msg); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--allow-file-access-from-files"],
});
try {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(pathToFileURL(page_path).href);
  await page.waitForSelector(".card");

  // 1. every thumbnail of the first page decodes (lazy images: scroll each into view)
  const cards = await page.locator(".card").count();
  check(cards === Math.min(records.size, 48), `${cards} cards for ${records.size} records`);
  for (const img of await page.locator(".card img").all()) {
    await img.scrollIntoViewIfNeeded();
  }
  await page.waitForFunction(() => [...document.querySelectorAll(".card img")].every((i) => i.complete), null, { timeout: 20000 });
  const broken = await page.$$eval(".card img", (imgs) => imgs.filter((i) => !(i.naturalWidth > 0)).map((i) => i.src));
  check(broken.length === 0, "thumbnails that did not decode: " + broken.join(", "));
  const shown = await page.locator(".card img").count();
  const expected = [...records.values()].reduce((n, r) => n + (r.output ? 1 : 0), 0);
  check(shown >= expected, `${shown} thumbnails shown, at least ${expected} outputs expected`);

  // 2. the status filter: failed only
  const failed = [...records.values()].filter((r) => r.status === "failed");
  await page.click('#statuses button[data-status="failed"]');
  const failedPaths = await page.$$eval(".card", (cs) => cs.map((c) => c.dataset.path));
  check(failedPaths.length === failed.length && failed.every((r) => failedPaths.includes(r.path)),
    `failed filter shows ${failedPaths} for ${failed.map((r) => r.path)}`);
  const why = await page.locator(".card .why").first().textContent();
  check(failed.length === 0 || why === failed.find((r) => r.path === failedPaths[0]).error, "the failure's reason is shown: " + why);
  await page.click('#statuses button[data-status="all"]');

  // 3. the folder filter: the subfolder only
  const folders = await page.$$eval("#folder option", (os) => os.map((o) => o.value).filter(Boolean));
  const sub = folders.find((f) => f.includes("1950s"));
  check(sub, "no subfolder in " + folders);
  await page.selectOption("#folder", sub);
  const inSub = await page.$$eval(".card", (cs) => cs.map((c) => c.dataset.path));
  const want = [...records.keys()].filter((p) => p.startsWith(sub + "/"));
  check(inSub.length === want.length && want.every((p) => inSub.includes(p)), `folder ${sub}: ${inSub} vs ${want}`);
  await page.selectOption("#folder", "");

  // 4. keyboard: next, previous, the viewer with before/after
  const focused = () => page.$eval(".card.focus", (c) => c.dataset.index);
  check((await focused()) === "0", "the first card has the focus");
  await page.keyboard.press("j");
  await page.keyboard.press("j");
  await page.keyboard.press("k");
  check((await focused()) === "1", "j, j, k: the second card");
  await page.keyboard.press("Enter");
  const after = await page.$eval("#viewer-caption", (e) => e.textContent);
  await page.keyboard.press(" ");
  const before = await page.$eval("#viewer-caption", (e) => e.textContent);
  check(after.startsWith("after") && before.startsWith("before"), `before/after: ${after} / ${before}`);
  await page.keyboard.press("Escape");

  // 5. flags: the focused card, by key; another by its button; the list is a --files-from list
  await page.keyboard.press("f");
  const first = await page.$eval(".card.focus", (c) => c.dataset.path);
  await page.locator(".card").nth(3).locator(".flag").click();
  const third = await page.locator(".card").nth(3).getAttribute("data-path");
  const list = await page.$eval("#list", (t) => t.value);
  // each line: the run's folder, the input's root, `/./`, the rest of its path (a rerun with
  // --files-from replaces exactly these outputs)
  const rerun = (p) => {
    const r = records.get(p);
    const rest = r.root === "." ? p : p.slice(r.root.length + 1);
    const root = r.root.startsWith("/") ? r.root : r.cwd + "/" + r.root;
    return root.replace(/\/\.$/, "") + "/./" + rest;
  };
  check(list === [first, third].map(rerun).sort().join("\n") + "\n", "the flagged list: " + JSON.stringify(list));
  check((await page.textContent("#flag-count")) === "2 flagged", "the flag count");
  const download = page.waitForEvent("download");
  await page.click("#save");
  const saved = readFileSync(await (await download).path(), "utf8");
  check(saved === list, "the saved list differs: " + JSON.stringify(saved));
  if (process.env.FLAGGED_OUT) writeFileSync(process.env.FLAGGED_OUT, saved);
  await page.click("#flagged-only");
  check((await page.locator(".card").count()) === 2, "flagged only");
  await page.click("#flagged-only");

  // 6. flags survive a reload (localStorage)
  await page.reload();
  await page.waitForSelector(".card");
  check((await page.textContent("#flag-count")) === "2 flagged", "flags lost on reload");

  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot(shot.endsWith(".jpg") ? { path: shot, quality: 80 } : { path: shot });

  // 7. 10,000 images: one page of cards at a time, paged by key, filtered over all pages
  if (big_path) {
    const big = await ctx.newPage();
    big.on("pageerror", (e) => errors.push(String(e)));
    await big.goto(pathToFileURL(big_path).href);
    await big.waitForSelector(".card");
    const n = await big.locator(".card").count();
    const label = await big.textContent("#page");
    check(n === 48 && label.includes("of 209") && label.includes("10000 images"), `10,000 images: ${n} cards, ${label}`);
    await big.keyboard.press("n");
    check((await big.textContent("#page")).startsWith("page 2 "), "n: the next page");
    check((await big.$eval(".card", (c) => c.dataset.index)) === "48", "page 2 starts at image 49");
    await big.click('#statuses button[data-status="failed"]');
    check((await big.textContent("#page")).includes("2000 images"), "failed over all pages: " + (await big.textContent("#page")));
  }
  // 8. hostile names and title: every card shows, nothing from a name or the title runs
  if (process.env.HOSTILE_PAGE) {
    const h = await ctx.newPage();
    const dialogs = [];
    h.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss(); });
    h.on("pageerror", (e) => errors.push(String(e)));
    h.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await h.goto(pathToFileURL(process.env.HOSTILE_PAGE).href);
    await h.waitForSelector(".card");
    const want = readFileSync(process.env.HOSTILE_REPORT, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l).path).sort();
    const shownPaths = (await h.$$eval(".card", (cs) => cs.map((c) => c.dataset.path))).sort();
    check(JSON.stringify(shownPaths) === JSON.stringify(want), `hostile names: cards ${JSON.stringify(shownPaths)} for ${JSON.stringify(want)}`);
    const title = process.env.HOSTILE_TITLE;
    check((await h.title()) === title, "the title as text: " + (await h.title()));
    check((await h.textContent("h1")) === title, "the heading as text: " + (await h.textContent("h1")));
    check((await h.locator('img[src="x"]').count()) === 0, "an image element from a file name");
    await h.waitForTimeout(300);
    check(dialogs.length === 0, "a script ran: " + dialogs.join("; "));
    const paths = await h.$$eval(".card .path", (ps) => ps.map((p) => p.textContent));
    check(want.every((p) => paths.includes(p)), "names shown as text: " + JSON.stringify(paths));
    // the inline script itself ran under the policy (cards), and no inline handler is allowed
    const blocked = await h.evaluate(() => {
      const d = document.createElement("div");
      d.setAttribute("onclick", "window.__ran = 1");
      document.body.appendChild(d); d.click();
      return window.__ran === undefined;
    });
    check(blocked, "an inline event handler ran: the Content-Security-Policy does not forbid them");
    errors.splice(0, errors.length, ...errors.filter((e) => !e.includes("Content Security Policy")));
    console.log(`gallery-test: hostile names and title shown as text (${want.length} cards), no script ran`);
  }
  check(errors.length === 0, "page errors: " + errors.join("; "));
  console.log(`gallery-test: ${records.size} images, ${cards} cards, every thumbnail decoded, filters, keys and flags work; screenshot ${shot}`);
} finally {
  await browser.close();
}
