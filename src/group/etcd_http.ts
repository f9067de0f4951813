/**
 * One HTTP POST to one etcd endpoint's JSON gateway, and the reading of its
 * answer (one JSON object, or a stream of them for `watch` and `keepalive`).
 *
 * ## The transport: `fetch`
 *
 * Both runtimes vmsnap runs under have `fetch` and `node:http`/`node:https`,
 * and both present a client certificate with either (checked against etcd
 * with `--client-cert-auth`: tests/unit/group_etcd_test.ts, and a member
 * compiled by Bun in tests/unit/group_auth_test.ts). Measured with
 * `scripts/group_bench.ts --only transport` against a local etcd 3.4 (300
 * sequential `/v3/kv/range` calls on a kept-alive connection, and 20 puts
 * each until its event came on a watch of the same transport); three runs
 * on this 2-core machine while other work ran (load 8–11), so ranges:
 *
 * | runtime | transport  | first call | p50          | p95        | put → watch event p50 |
 * | ------- | ---------- | ---------- | ------------ | ---------- | --------------------- |
 * | Bun     | fetch http | 6–15 ms    | 0.44–0.54 ms | 1.0–2.1 ms | 0.62–0.74 ms          |
 * | Bun     | node:http  | 22–30 ms   | 0.59–1.08 ms | 2.1–4.7 ms | 0.58–1.01 ms          |
 * | Bun     | fetch TLS  | 14–37 ms   | 0.67–0.79 ms | 2.0–5.7 ms | 0.83–1.16 ms          |
 * | Bun     | node:https | 21–36 ms   | 0.70–1.56 ms | 1.3–4.2 ms | 0.79–1.71 ms          |
 * | Deno    | fetch http | 16–64 ms   | 0.66–0.89 ms | 2.6–3.5 ms | 1.12–1.53 ms          |
 * | Deno    | node:http  | 14–23 ms   | 0.67–1.29 ms | 1.7–3.0 ms | 0.77–1.71 ms          |
 *
 * The binary runs under Bun, where `fetch` is the native client and
 * `node:http` a compatibility layer: `fetch` answered sooner at the median in
 * every run, and its first call (which a member makes before it quiesces)
 * cost less over plain HTTP. Under Deno (the unit tests) the two are alike.
 * Both stream a response body as it comes (the watch) and stop at once on an
 * AbortSignal. What `node:https` has for it, one way to give a client
 * certificate in both runtimes, `fetch` gets from {@linkcode tlsInit}: Bun's
 * `tls: { ca, cert, key }` request option, or a client made by
 * `Deno.createHttpClient`. No npm client: the maintained one, `etcd3` 1.1.2,
 * speaks gRPC (37 packages, 16 MB with `@grpc/grpc-js` and protobufjs) and
 * measured no better the same way under Bun: first call 77–133 ms, p50
 * 0.72–0.94 ms, p95 3.4–5.7 ms, put → watch event 0.72–1.17 ms.
 *
 * @module
 */
import { Buffer } from "node:buffer";

/** PEM texts for TLS: the CA that signed etcd's certificate, and this member's own certificate and key. */
export interface EtcdTls {
  /** The CA certificate(s) that etcd's server certificate must chain to (else the system's). */
  ca?: string;
  /** This member's client certificate (mutual TLS). */
  cert?: string;
  /** The key of `cert`. */
  key?: string;
}

// deno-lint-ignore no-explicit-any
const runtime = globalThis as any;

/**
 * What `fetch` needs besides the request to use these TLS settings: Bun's
 * `tls` option, or a Deno HTTP client (made once per settings object).
 *
 * @example
 * ```ts
 * import { tlsInit } from "./etcd_http.ts";
 * const init = { method: "POST", ...tlsInit({ ca: "-----BEGIN CERTIFICATE-----\n…" }) };
 * ```
 */
export function tlsInit(tls: EtcdTls | undefined): Record<string, unknown> {
  if (!tls || (!tls.ca && !tls.cert && !tls.key)) return {};
  if (runtime.Bun) {
    return { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } };
  }
  let client = denoClients.get(tls);
  if (!client) {
    client = runtime.Deno.createHttpClient({
      caCerts: tls.ca ? [tls.ca] : undefined,
      cert: tls.cert,
      key: tls.key,
    }) as { close(): void };
    denoClients.set(tls, client);
  }
  return { client };
}
const denoClients = new WeakMap<EtcdTls, { close(): void }>();

/**
 * Closes what {@linkcode tlsInit} opened for these settings (Deno's HTTP
 * client; nothing under Bun).
 *
 * @example
 * ```ts
 * import { closeTls, tlsInit } from "./etcd_http.ts";
 * const tls = { ca: "-----BEGIN CERTIFICATE-----\n…" };
 * tlsInit(tls);
 * closeTls(tls);
 * ```
 */
export function closeTls(tls: EtcdTls | undefined): void {
  const client = tls ? denoClients.get(tls) : undefined;
  if (!client) return;
  denoClients.delete(tls!);
  client.close();
}

/** What an endpoint answered: the HTTP status and the body, not yet read. */
export interface Posted {
  status: number;
  body: ReadableStream<Uint8Array> | null;
  /** Reads the whole body as text. */
  text(): Promise<string>;
}

/**
 * POSTs a JSON body to `endpoint + path` and returns as soon as the answer's
 * headers are in (a stream's body is read by the caller). Throws what `fetch`
 * throws (a network error, or the signal's reason).
 *
 * @example
 * ```ts
 * import { postJson } from "./etcd_http.ts";
 * const posted = await postJson({
 *   endpoint: "http://127.0.0.1:2379",
 *   path: "/v3/kv/range",
 *   body: { key: "Zm9v" },
 *   signal: AbortSignal.timeout(2000),
 * });
 * console.log(posted.status, await posted.text());
 * ```
 */
export async function postJson(options: {
  endpoint: string;
  path: string;
  /** An object, or text already made (several JSON objects for a stream request). */
  body: unknown;
  signal: AbortSignal;
  headers?: Record<string, string>;
  tls?: EtcdTls;
}): Promise<Posted> {
  const response = await fetch(options.endpoint.replace(/\/+$/, "") + options.path, {
    method: "POST",
    body: typeof options.body === "string" ? options.body : JSON.stringify(options.body),
    headers: { "content-type": "application/json", ...options.headers },
    signal: options.signal,
    ...tlsInit(options.tls),
  } as RequestInit);
  return {
    status: response.status,
    body: response.body,
    text: () => response.text(),
  };
}

/**
 * Reads a stream of JSON objects, one a line (how the gateway streams
 * `watch` and `keepalive` answers), calling `onObject` for each as it
 * arrives. Resolves when the stream ends; rejects when it breaks.
 *
 * @example
 * ```ts
 * import { postJson, readJsonLines } from "./etcd_http.ts";
 * const posted = await postJson({ endpoint: "http://127.0.0.1:2379", path: "/v3/watch",
 *   body: { create_request: { key: "Zm9v" } }, signal: AbortSignal.timeout(5000) });
 * await readJsonLines(posted.body!, (o) => console.log(o));
 * ```
 */
export async function readJsonLines(
  body: ReadableStream<Uint8Array>,
  onObject: (object: unknown) => void,
): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line !== "") onObject(JSON.parse(line));
      }
    }
    const rest = (buffered + decoder.decode()).trim();
    if (rest !== "") onObject(JSON.parse(rest));
  } finally {
    reader.releaseLock();
  }
}

/**
 * A key or value as the gateway wants it: the UTF-8 bytes in base64.
 *
 * @example
 * ```ts
 * import { b64 } from "./etcd_http.ts";
 * b64("foo"); // "Zm9v"
 * ```
 */
export function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

/**
 * The text of a base64 key or value from the gateway ("" when absent).
 *
 * @example
 * ```ts
 * import { unb64 } from "./etcd_http.ts";
 * unb64("Zm9v"); // "foo"
 * ```
 */
export function unb64(encoded: string | undefined): string {
  return encoded ? Buffer.from(encoded, "base64").toString("utf8") : "";
}

/**
 * The end of the range of every key that starts with `prefix` (etcd's
 * `range_end`: the prefix with its last byte incremented), as base64.
 *
 * @example
 * ```ts
 * import { prefixEnd, unb64 } from "./etcd_http.ts";
 * unb64(prefixEnd("/vmsnap/groups/shop/")); // "/vmsnap/groups/shop0"
 * ```
 */
export function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, "utf8");
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 0xff) {
      const end = Buffer.from(bytes.subarray(0, i + 1));
      end[i]++;
      return end.toString("base64");
    }
  }
  return Buffer.from([0]).toString("base64"); // every key (etcd's "\0" range end)
}

/**
 * Waits `ms`, or less when the signal aborts first (never rejects).
 *
 * @example
 * ```ts
 * import { pause } from "./etcd_http.ts";
 * await pause(100, AbortSignal.timeout(50)); // back after 50 ms
 * ```
 */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
