// Plays an hlsgate player page in the system Chromium and reports how far playback got.
//
//   node play.mjs <pageUrl> <seconds> [timeoutSeconds=60] [until=currentTime|played] [options]
//
// Options (after the positional arguments; each adds to the JSON line, none changes it otherwise):
//   --ignore-https-errors   launch Chromium with --ignore-certificate-errors (a test certificate)
//   --hls-config=JSON       merged into the config the page passes to `new Hls(…)`, e.g.
//                           '{"lowLatencyMode":true}'; also keeps the instance as window.__hls
//   --latency               samples hls.latency / targetLatency / the wall-clock latency from
//                           EXT-X-PROGRAM-DATE-TIME (Date.now() - hls.playingDate) every poll:
//                           "latency": [{"at": s since navigation, "latency", "target", "wall",
//                           "currentTime", "played"}], "lowLatencyMode": bool
//   --resources             "resources": [{"name", "protocol", "type"}] from the page's Resource
//                           Timing (nextHopProtocol: "h2", "http/1.1"); the page is same-origin
//                           with what hls.js fetches, so Chromium shows the protocol
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
import fs from "node:fs";

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
  console.error(
    "usage: node play.mjs <pageUrl> <seconds> [timeoutSeconds=60] [until=currentTime|played] " +
      "[--ignore-https-errors] [--hls-config=JSON] [--latency] [--resources]",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const positional = argv.filter((a) => !a.startsWith("--"));
  const flags = argv.filter((a) => a.startsWith("--"));
  const [pageUrl, seconds, timeout = "60", until = "currentTime"] = positional;
  const target = Number(seconds);
  const limit = Number(timeout);
  if (!pageUrl || !Number.isFinite(target) || !Number.isFinite(limit) || limit <= 0) usage();
  if (until !== "currentTime" && until !== "played") usage();
  const options = { ignoreHttpsErrors: false, hlsConfig: null, latency: false, resources: false };
  for (const flag of flags) {
    if (flag === "--ignore-https-errors") options.ignoreHttpsErrors = true;
    else if (flag === "--latency") options.latency = true;
    else if (flag === "--resources") options.resources = true;
    else if (flag.startsWith("--hls-config=")) {
      try {
        options.hlsConfig = JSON.parse(flag.slice("--hls-config=".length));
      } catch (e) {
        console.error(`play.mjs: --hls-config is not JSON: ${e.message}`);
        usage();
      }
    } else usage();
  }
  return { pageUrl, target, limitMs: limit * 1000, until, options };
}

// Appended to hls.min.js when an option needs the page's Hls instance: a subclass that merges
// the test's config into the page's and keeps the instance. Statics (isSupported, Events) are
// inherited, so the page works unchanged.
function hlsWrapper(hlsConfig) {
  return `
;(function () {
  var Base = window.Hls;
  if (!Base) return;
  var extra = ${JSON.stringify(hlsConfig || {})};
  window.Hls = class extends Base {
    constructor(config) {
      super(Object.assign({}, config || {}, extra));
      window.__hls = this;
    }
  };
})();
`;
}

// One latency sample from the page (null until hls.js has a live playlist).
function latencySample() {
  const hls = window.__hls;
  const video = document.querySelector("video");
  if (!hls || !video || video.currentTime <= 0) return null;
  const date = hls.playingDate;
  return {
    latency: hls.latency,
    target: hls.targetLatency,
    wall: date ? (Date.now() - date.getTime()) / 1000 : null,
    currentTime: video.currentTime,
    lowLatencyMode: !!hls.config.lowLatencyMode,
  };
}

function resourceEntries() {
  return performance
    .getEntriesByType("resource")
    .map((e) => ({ name: e.name, protocol: e.nextHopProtocol, type: e.initiatorType }));
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
async function watch(page, target, until, deadline, options = {}, samples = []) {
  let last = { currentTime: 0, played: 0, fatal: null };
  const started = Date.now();
  while (Date.now() < deadline) {
    try {
      const state = await page.evaluate(() => window.__player || null);
      const played = await page.evaluate(playedSeconds);
      if (state) last = { currentTime: Number(state.currentTime) || 0, played, fatal: state.fatal ?? null };
      if (options.latency) {
        const sample = await page.evaluate(latencySample);
        if (sample) samples.push({ at: (Date.now() - started) / 1000, played, ...sample });
      }
    } catch (e) {
      // A navigation in progress destroys the context; try again on the next tick.
      console.error(`play.mjs: evaluate: ${e.message}`);
    }
    if (last.fatal || last[until] >= target) return { ...last, timedOut: false };
    await sleep(POLL_MS);
  }
  return { ...last, timedOut: true };
}

async function run({ pageUrl, target, limitMs, until, options }) {
  const deadline = Date.now() + limitMs;
  const args = options.ignoreHttpsErrors ? [...CHROMIUM_ARGS, "--ignore-certificate-errors"] : CHROMIUM_ARGS;
  // playwright's launch gives every run a fresh temporary profile (--user-data-dir).
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
  // If closing hangs, do not hold the Rust test past its own timeout.
  const hardStop = setTimeout(() => process.exit(0), limitMs + 15000);
  hardStop.unref();
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: options.ignoreHttpsErrors });
    const page = await context.newPage();
    if (options.resources) {
      // The default buffer keeps 250 entries; a 15 s LL-HLS run makes more.
      await page.addInitScript(() => performance.setResourceTimingBufferSize(100000));
    }
    page.on("console", (m) => console.error(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => console.error(`pageerror: ${e.message}`));
    page.on("requestfailed", (r) => console.error(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
    const wrap = options.hlsConfig !== null || options.latency;
    const hlsBody = wrap ? fs.readFileSync(HLS_JS, "utf8") + hlsWrapper(options.hlsConfig) : null;
    await page.route(HLS_CDN_URL, (route) =>
      wrap
        ? route.fulfill({ body: hlsBody, contentType: "application/javascript; charset=utf-8" })
        : route.fulfill({ path: HLS_JS, contentType: "application/javascript; charset=utf-8" }),
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
    const samples = [];
    const result = await watch(page, target, until, deadline, options, samples);
    if (options.latency) {
      result.latency = samples.map(({ lowLatencyMode, ...rest }) => rest);
      result.lowLatencyMode = samples.length ? samples[samples.length - 1].lowLatencyMode : null;
    }
    if (options.resources) {
      result.resources = await page.evaluate(resourceEntries).catch((e) => {
        console.error(`play.mjs: resources: ${e.message}`);
        return [];
      });
    }
    return result;
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
