/**
 * One HTTP POST to one etcd endpoint's JSON gateway, and the reading of its
 * answer (one JSON object, or a stream of them for `watch` and `keepalive`).
 *
 * ## The transport: `fetch`
 *
 * Both runtimes vmsnap runs under have `fetch` and `node:http`/`node:https`,
 * and both can present a client certificate with either. `fetch` was chosen
 * by measurement (`scripts/etcd_transport_bench.ts`, 300 sequential
 * `/v3/kv/range` calls on a kept-alive connection to a local etcd 3.4, and
 * 20 watch events, under load ~2 on this 2-core machine):
 *
 * | runtime | transport     | first call | p50     | p95     | put → watch event p50 |
 * | ------- | ------------- | ---------- | ------- | ------- | --------------------- |
 * | Bun     | fetch http    | 4–9 ms     | 0.45–0.69 ms | 0.8–1.9 ms | 3.0 ms  |
 * | Bun     | fetch https   | 9–14 ms    | 0.69–1.07 ms | 1.2–2.8 ms | 3.2 ms  |
 * | Bun     | node:http     | 26–250 ms  | 0.69–1.03 ms | 2.5–4.5 ms | 2.8 ms  |
 * | Bun     | node:https    | 26–38 ms   | 0.85–1.06 ms | 2.8–3.5 ms | 2.6 ms  |
 * | Deno    | fetch http    | 8–47 ms    | 0.59–0.72 ms | 1.3–3.8 ms | 4.2 ms  |
 * | Deno    | node:http     | 13–20 ms   | 0.71–1.04 ms | 1.5–2.9 ms | 2.9 ms  |
 *
 * In the compiled binary (Bun) `fetch` is native and `node:http` is a layer
 * over it: `fetch` answers sooner (p50 and p95) and its first call is cheaper
 * (no module to load on first use). Under Deno (the unit tests) the two are
 * alike. Both stream a response body as it comes (the watch) and stop at once
 * on an AbortSignal. The one difference between the runtimes is how a TLS
 * client certificate is given to `fetch`: Bun takes `tls: { ca, cert, key }`
 * in the request, Deno an HTTP client made by `Deno.createHttpClient`;
 * {@linkcode tlsInit} hides it. No npm client: the etcd v3 clients on npm
 * speak gRPC (HTTP/2 and protobuf, hundreds of kB of dependencies) to do what
 * a dozen JSON calls do here.
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
