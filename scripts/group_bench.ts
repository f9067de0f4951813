/**
 * Figures of the consistency-group protocol (issue 24, phase 1: the library;
 * the binary's frozen windows come with `deno task bench` once `run` takes
 * part in groups). Measured against a real etcd (Debian's etcd-server, one
 * node on loopback, data on tmpfs) started by this script:
 *
 *   transport  300 sequential /v3/kv/range calls and 20 watch events with
 *              fetch and with node:http/node:https, under Deno and under Bun
 *              (the choice in src/group/etcd_http.ts)
 *   barrier    groups of 2, 4, 8, 16 and 32 members, each a separate process
 *              (tests/group_driver.ts compiled by Bun, as the binary is):
 *              from the last member quiesced (about to write `held`) to every
 *              member past the `held` barrier, per run (p50, p95, max), and
 *              the etcd requests each member made in the run
 *
 * Usage (root): deno run -A scripts/group_bench.ts [--only transport,barrier]
 *               [--sizes 2,4,8,16,32] [--rounds N] [--write FILE]
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { loadavg } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { type EtcdCluster, makePki, startEtcd } from "../tests/etcd.ts";
import {
  compileDriver,
  type MemberProcess,
  startMember,
  stopMembers,
} from "../tests/group_members.ts";
import { secureDir } from "../tests/helpers.ts";

const root = join(new URL(".", import.meta.url).pathname, "..");
const BUN = join(root, "node_modules", "bun", "bin", "bun.exe");
const DENO = join(root, "node_modules", "deno", "deno");

// ── the transport child: runs under Deno or Bun, prints one JSON line ────────

interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/** One POST with node:http(s) on a kept-alive agent. */
function nodePoster(tls: TlsFiles) {
  const agents = {
    "http:": new http.Agent({ keepAlive: true }),
    "https:": new https.Agent({ keepAlive: true, ...tls }),
  };
  return (url: string, body: string): Promise<string> => {
    const u = new URL(url);
    const mod = u.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const request = mod.request(u, {
        method: "POST",
        agent: agents[u.protocol as "http:" | "https:"],
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      }, (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (d) => (text += d));
        response.on("end", () => resolve(text));
        response.on("error", reject);
      });
      request.on("error", reject);
      request.end(body);
    });
  };
}

/** One POST with fetch (the TLS options as src/group/etcd_http.ts gives them). */
async function fetchPoster(tls: TlsFiles) {
  const { tlsInit } = await import("../src/group/etcd_http.ts");
  const settings = { ca: tls.ca, cert: tls.cert, key: tls.key };
  return async (url: string, body: string): Promise<string> => {
    const init = { method: "POST", body, ...(url.startsWith("https:") ? tlsInit(settings) : {}) };
    return await (await fetch(url, init as RequestInit)).text();
  };
}

async function timeCalls(post: (url: string, body: string) => Promise<string>, url: string) {
  const body = JSON.stringify({ key: "Zm9v" });
  const first = performance.now();
  await post(url, body);
  const firstMs = performance.now() - first;
  const times: number[] = [];
  for (let i = 0; i < 300; i++) {
    const t0 = performance.now();
    const text = await post(url, body);
    times.push(performance.now() - t0);
    if (!text.includes("header")) throw new Error(text);
  }
  return { firstMs, ...stats(times) };
}

/** A streamed POST read line by line, with fetch or node:http(s); stopped by the signal. */
function streamLines(
  transport: string,
  tls: TlsFiles,
  url: string,
  body: string,
  signal: AbortSignal,
  onLine: (line: string) => void,
): void {
  let buffered = "";
  const take = (chunk: string) => {
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      onLine(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
    }
  };
  if (transport === "fetch") {
    import("../src/group/etcd_http.ts").then(async ({ tlsInit }) => {
      const init = {
        method: "POST",
        body,
        signal,
        ...(url.startsWith("https:") ? tlsInit(tls) : {}),
      };
      const reader = (await fetch(url, init as RequestInit)).body!.pipeThrough(
        new TextDecoderStream(),
      )
        .getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        take(value);
      }
    }).catch(() => {});
    return;
  }
  const u = new URL(url);
  const mod = u.protocol === "https:" ? https : http;
  const request = mod.request(u, {
    method: "POST",
    signal,
    ...(u.protocol === "https:" ? tls : {}),
  }, (r) => {
    r.setEncoding("utf8");
    r.on("data", take);
    r.on("error", () => {});
  });
  request.on("error", () => {});
  request.end(body);
}

/** From a put's start to its event on a watch of the same transport, 20 times. */
async function timeWatch(
  transport: string,
  post: (url: string, body: string) => Promise<string>,
  tls: TlsFiles,
  endpoint: string,
) {
  const key = Buffer.from(`/bench/${transport}/${endpoint}`).toString("base64");
  const controller = new AbortController();
  const seen: number[] = [];
  let sentAt = 0;
  let created!: () => void;
  const ready = new Promise<void>((resolve) => (created = resolve));
  streamLines(
    transport,
    tls,
    `${endpoint}/v3/watch`,
    JSON.stringify({ create_request: { key } }),
    controller.signal,
    (line) => {
      if (line.includes('"created"')) created();
      if (line.includes('"events"')) seen.push(performance.now() - sentAt);
    },
  );
  await ready;
  for (let i = 0; i < 20; i++) {
    const count = seen.length;
    sentAt = performance.now();
    await post(
      `${endpoint}/v3/kv/put`,
      JSON.stringify({ key, value: Buffer.from(String(i)).toString("base64") }),
    );
    while (seen.length === count) await new Promise((r) => setTimeout(r, 1));
  }
  controller.abort();
  return stats(seen).p50;
}

async function transportChild(endpoints: { http: string; https: string }, tls: TlsFiles) {
  const runtime = "Bun" in globalThis ? "Bun" : "Deno";
  const posters = { fetch: await fetchPoster(tls), "node:http": nodePoster(tls) };
  const rows = [];
  for (const [transport, post] of Object.entries(posters)) {
    for (const scheme of ["http", "https"] as const) {
      const url = `${endpoints[scheme]}/v3/kv/range`;
      const calls = await timeCalls(post, url);
      const watchMs = await timeWatch(transport, post, tls, endpoints[scheme]);
      rows.push({ runtime, transport, scheme, ...calls, watchMs });
    }
  }
  process.stdout.write(JSON.stringify(rows) + "\n");
  process.exit(0);
}

// ── the parent ────────────────────────────────────────────────────────────────

function stats(values: number[]): { p50: number; p95: number; max: number; n: number } {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { p50: at(0.5), p95: at(0.95), max: sorted[sorted.length - 1], n: sorted.length };
}

const ms = (v: number) => v.toFixed(v < 10 ? 2 : 1);

async function transportSection(dir: string): Promise<string[]> {
  const pki = makePki(join(dir, "pki"));
  const plain = await startEtcd();
  const secure = await startEtcd({ tls: pki });
  try {
    const client = pki.client("bench", { cn: false });
    const tls = {
      ca: readFileSync(pki.caFile, "utf8"),
      cert: readFileSync(client.certFile, "utf8"),
      key: readFileSync(client.keyFile, "utf8"),
    };
    const args = [
      "--transport-child",
      JSON.stringify({ http: plain.endpoints[0], https: secure.endpoints[0] }),
      JSON.stringify(tls),
    ];
    const script = join(root, "scripts", "group_bench.ts");
    const rows = [
      ...JSON.parse(execFileSync(DENO, ["run", "-A", script, ...args], { encoding: "utf8" })),
      ...JSON.parse(execFileSync(BUN, ["run", script, ...args], { encoding: "utf8", cwd: root })),
    ];
    return [
      "## Transport: one etcd call (`/v3/kv/range`, 300 in a row on a kept-alive connection),",
      "## and a put until its event arrives on a watch (20 times)",
      "",
      "| runtime | transport | scheme | first call | p50 | p95 | max | put → watch event p50 |",
      "| ------- | --------- | ------ | ---------- | --- | --- | --- | --------------------- |",
      ...rows.map((r) =>
        `| ${r.runtime} | ${r.transport} | ${r.scheme} | ${ms(r.firstMs)} ms | ${ms(r.p50)} ms | ${
          ms(r.p95)
        } ms | ${ms(r.max)} ms | ${ms(r.watchMs)} ms |`
      ),
    ];
  } finally {
    await plain.stop();
    await secure.stop();
  }
}

/** One group run of `size` members; the barrier's figures from their events. */
async function groupRound(
  cluster: EtcdCluster,
  driver: string,
  size: number,
): Promise<{ barrierMs?: number; requests?: number[]; aborted?: string }> {
  const names = Array.from({ length: size }, (_, i) => `m${i}`);
  const procs: MemberProcess[] = names.map((member) =>
    startMember({
      endpoints: cluster.endpoints,
      group: `bench${size}`,
      member,
      members: names,
      quiesceMs: Math.floor(Math.random() * 30),
      snapshotMs: 0,
      joinTimeoutMs: 60_000,
      barrierTimeoutMs: 30_000,
      outcomeWaitMs: 10_000,
    }, { driver })
  );
  try {
    await Promise.all(procs.map((p) => p.exited));
    const outcomes = procs.map((p) => p.find((e) => e.ev === "outcome"));
    const failed = procs.find((_, i) => outcomes[i]?.outcome.consistency !== "application");
    if (failed) {
      const why = failed.find((e) => e.ev === "join-failed" || (e.ev === "released" && e.aborted));
      return { aborted: `${failed.name}: ${why?.code ?? "?"} ${why?.message ?? ""}`.trim() };
    }
    const lastQuiesced = Math.max(...procs.map((p) => p.find((e) => e.ev === "holding")!.wall));
    const passed = procs.map((p) => p.find((e) => e.ev === "passed")!.wall);
    return {
      barrierMs: Math.max(...passed) - lastQuiesced,
      requests: outcomes.map((o) => o!.requests as number),
    };
  } finally {
    await stopMembers(procs);
  }
}

async function barrierSection(dir: string, sizes: number[], rounds: number): Promise<string[]> {
  const driver = compileDriver(dir);
  const cluster = await startEtcd();
  const rows: string[] = [];
  const notes: string[] = [];
  try {
    for (const size of sizes) {
      const barrier: number[] = [];
      const requests: number[] = [];
      const aborted: string[] = [];
      const n = size >= 16 ? Math.max(3, Math.ceil(rounds / 3)) : rounds;
      for (let round = 0; round < n; round++) {
        const r = await groupRound(cluster, driver, size);
        if (r.aborted) aborted.push(r.aborted);
        else {
          barrier.push(r.barrierMs!);
          requests.push(...r.requests!);
        }
      }
      notes.push(...aborted.map((a) => `- ${size} members, a run aborted: ${a}`));
      if (barrier.length === 0) {
        rows.push(`| ${size} | ${n} | ${aborted.length} | | | | |`);
        continue;
      }
      const b = stats(barrier);
      const q = stats(requests);
      rows.push(
        `| ${size} | ${n} | ${aborted.length} | ${ms(b.p50)} ms | ${ms(b.p95)} ms | ${
          ms(b.max)
        } ms | ${q.p50} (${Math.min(...requests)}–${q.max}) |`,
      );
      console.error(`barrier: ${size} members done`);
    }
  } finally {
    await cluster.stop();
  }
  return [
    "## The `held` barrier: last member quiesced → every member past it",
    "",
    "Members are processes on this machine (tests/group_driver.ts compiled by Bun), one etcd on",
    "loopback with its data on tmpfs. Requests: every HTTP request a member made in the run (join,",
    "phases, watch, report, keep-alives, lease revoke; the creator also prunes old runs).",
    "",
    "| members | runs | aborted | p50 | p95 | max | requests per member: median (min–max) |",
    "| ------- | ---- | ------- | --- | --- | --- | -------------------------------------- |",
    ...rows,
    ...(notes.length > 0 ? ["", ...notes] : []),
  ];
}

async function main(): Promise<void> {
  if (process.argv[2] === "--transport-child") {
    return await transportChild(JSON.parse(process.argv[3]), JSON.parse(process.argv[4]));
  }
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      only: { type: "string", default: "transport,barrier" },
      sizes: { type: "string", default: "2,4,8,16,32" },
      rounds: { type: "string", default: "10" },
      write: { type: "string" },
    },
  });
  const only = values.only.split(",");
  const dir = secureDir("group-bench-");
  const lines = [
    "# Consistency groups: protocol figures",
    "",
    `Measured ${new Date().toISOString()} by scripts/group_bench.ts; load average before: ${
      loadavg()[0].toFixed(2)
    }; ${execFileSync("etcd", ["--version"], { encoding: "utf8" }).split("\n")[0]}.`,
    "",
  ];
  try {
    if (only.includes("transport")) lines.push(...await transportSection(dir.dir), "");
    if (only.includes("barrier")) {
      const sizes = values.sizes.split(",").map(Number);
      lines.push(...await barrierSection(dir.dir, sizes, Number(values.rounds)), "");
    }
  } finally {
    dir.cleanup();
  }
  const text = lines.join("\n");
  if (values.write) writeFileSync(values.write, text);
  console.log(text);
}

await main();
