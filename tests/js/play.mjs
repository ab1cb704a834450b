// Plays an hlsgate player page in the system Chromium and reports how far playback got.
//
//   node play.mjs <pageUrl> <seconds> [timeoutSeconds=60] [until=currentTime|played]
//
// Waits until `until` reaches <seconds>: `currentTime` (the default) is the media position;
// `played` is how much media actually played (the sum of video.played ranges), which is what
// matters on a live stream, where playback starts tens of seconds into the timeline.
//
// Prints exactly ONE JSON line on stdout and exits 0 whenever the page could be driven:
//   {"currentTime": 6.1, "played": 6.0, "fatal": null, "timedOut": false}
//   {"currentTime": 0, "fatal": {"type": "networkError", "details": "manifestLoadError", "status": 404}, ...}
// The Rust tests assert on that line. Diagnostics (console, page errors) go to stderr.
// Exit 1 means the browser itself could not be run; exit 2 means bad arguments.

import { chromium } from "playwright-core";
import { fileURLToPath } from "node:url";
import path from "node:path";

// The URL the real page loads hls.js from. There is no internet in tests, so it is served
// from the pinned npm copy instead; the page itself stays what production serves.
const HLS_CDN_URL = "https://cdn.jsdelivr.net/npm/hls.js@1/dist/hls.min.js";
const HERE = path.dirname(fileURLToPath(import.meta.url));
const HLS_JS = path.join(HERE, "node_modules", "hls.js", "dist", "hls.min.js");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const POLL_MS = 200;

const CHROMIUM_ARGS = [
  "--no-sandbox", // runs as root in CI
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // Playback must start without a user gesture even if the page forgot `muted`.
  "--autoplay-policy=no-user-gesture-required",
];

function usage() {
  console.error("usage: node play.mjs <pageUrl> <seconds> [timeoutSeconds=60] [until=currentTime|played]");
  process.exit(2);
}

function parseArgs(argv) {
  const [pageUrl, seconds, timeout = "60", until = "currentTime"] = argv;
  const target = Number(seconds);
  const limit = Number(timeout);
  if (!pageUrl || !Number.isFinite(target) || !Number.isFinite(limit) || limit <= 0) usage();
  if (until !== "currentTime" && until !== "played") usage();
  return { pageUrl, target, limitMs: limit * 1000, until };
}

function report(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Sum of the time ranges the <video> actually played.
function playedSeconds() {
  const video = document.querySelector("video");
  if (!video) return 0;
  let sum = 0;
  for (let i = 0; i < video.played.length; i++) sum += video.played.end(i) - video.played.start(i);
  return sum;
}

// Polls window.__player until playback reached `target`, a fatal error shows, or time runs out.
async function watch(page, target, until, deadline) {
  let last = { currentTime: 0, played: 0, fatal: null };
  while (Date.now() < deadline) {
    try {
      const state = await page.evaluate(() => window.__player || null);
      const played = await page.evaluate(playedSeconds);
      if (state) last = { currentTime: Number(state.currentTime) || 0, played, fatal: state.fatal ?? null };
    } catch (e) {
      // A navigation in progress destroys the context; try again on the next tick.
      console.error(`play.mjs: evaluate: ${e.message}`);
    }
    if (last.fatal || last[until] >= target) return { ...last, timedOut: false };
    await sleep(POLL_MS);
  }
  return { ...last, timedOut: true };
}

async function run({ pageUrl, target, limitMs, until }) {
  const deadline = Date.now() + limitMs;
  // playwright's launch gives every run a fresh temporary profile (--user-data-dir).
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  // If closing hangs, do not hold the Rust test past its own timeout.
  const hardStop = setTimeout(() => process.exit(0), limitMs + 15000);
  hardStop.unref();
  try {
    const page = await browser.newPage();
    page.on("console", (m) => console.error(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => console.error(`pageerror: ${e.message}`));
    page.on("requestfailed", (r) => console.error(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
    await page.route(HLS_CDN_URL, (route) =>
      route.fulfill({ path: HLS_JS, contentType: "application/javascript; charset=utf-8" }),
    );

    let response;
    try {
      response = await page.goto(pageUrl, { waitUntil: "domcontentloaded", timeout: limitMs });
    } catch (e) {
      return {
        currentTime: 0,
        played: 0,
        fatal: { type: "navigation", details: e.message, status: null },
        timedOut: false,
      };
    }
    if (response && !response.ok()) {
      return {
        currentTime: 0,
        played: 0,
        fatal: { type: "page", details: `player page answered ${response.status()}`, status: response.status() },
        timedOut: false,
      };
    }
    return await watch(page, target, until, deadline);
  } finally {
    await browser.close().catch(() => {});
  }
}

const args = parseArgs(process.argv.slice(2));
try {
  report(await run(args));
  process.exit(0);
} catch (e) {
  console.error(`play.mjs: could not run ${CHROMIUM}: ${e.stack || e}`);
  process.exit(1);
}
