/**
 * A minimal Redis client over `node:net` (RESP2): one connection, commands
 * answered in order. Enough for the `redis` plugin, with no dependency and
 * nothing loaded at start.
 *
 * @module
 */
import type { Socket } from "node:net";

/** A reply: a string, an integer, null, or an array of replies. */
export type Reply = string | number | null | Reply[];

/** An error reply of the server (`-ERR …`, `-NOPERM …`). */
export class RedisError extends Error {
  /** The first word of the error (`ERR`, `NOPERM`, `WRONGPASS`). */
  readonly code: string;

  constructor(message: string) {
    super(message);
    this.code = message.split(" ")[0];
  }
}

/** Where the server listens. */
export type RedisAddress = { socket: string } | { host: string; port: number };

/** Parses one reply at `at`; returns it and where the next starts, or undefined when incomplete. */
function parse(buf: Buffer, at: number): [Reply | RedisError, number] | undefined {
  const eol = buf.indexOf("\r\n", at);
  if (eol < 0) return undefined;
  const kind = String.fromCharCode(buf[at]);
  const line = buf.toString("utf8", at + 1, eol);
  const next = eol + 2;
  switch (kind) {
    case "+":
      return [line, next];
    case "-":
      return [new RedisError(line), next];
    case ":":
      return [Number(line), next];
    case "$": {
      const length = Number(line);
      if (length < 0) return [null, next];
      if (buf.length < next + length + 2) return undefined;
      return [buf.toString("utf8", next, next + length), next + length + 2];
    }
    case "*": {
      const count = Number(line);
      if (count < 0) return [null, next];
      const items: Reply[] = [];
      let pos = next;
      for (let i = 0; i < count; i++) {
        const item = parse(buf, pos);
        if (!item) return undefined;
        // An error inside an array is kept as its message.
        items.push(item[0] instanceof RedisError ? item[0].message : item[0]);
        pos = item[1];
      }
      return [items, pos];
    }
    default:
      throw new RedisError(`PROTOCOL unexpected reply type ${JSON.stringify(kind)}`);
  }
}

/** One connection to a Redis server. */
export class RedisConnection {
  readonly #socket: Socket;
  #pending: { resolve(r: Reply): void; reject(e: Error): void }[] = [];
  #buffer: Buffer = Buffer.alloc(0);
  #closed: Error | undefined;

  private constructor(socket: Socket, onClose: (why: string) => void) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => this.#receive(chunk));
    socket.on("error", (error) => this.#fail(error));
    socket.on("close", () => {
      const why = this.#closed?.message ?? "the server closed the connection";
      this.#fail(new Error(why));
      onClose(why);
    });
  }

  /**
   * Connects; aborting `signal` destroys the half-open socket.
   *
   * @example
   * ```ts
   * import { RedisConnection } from "./resp.ts";
   * const redis = await RedisConnection.open({ socket: "/run/redis/redis.sock" }, new AbortController().signal);
   * console.log(await redis.command("PING"));
   * redis.destroy();
   * ```
   */
  static async open(
    address: RedisAddress,
    signal: AbortSignal,
    onClose: (why: string) => void = () => {},
  ): Promise<RedisConnection> {
    // node:net loads here, not at every start of vmsnap (~2 ms; issue 12).
    const { connect: netConnect } = await import("node:net");
    return new Promise((resolve, reject) => {
      const socket = "socket" in address
        ? netConnect(address.socket)
        : netConnect(address.port, address.host);
      const cancel = () => socket.destroy();
      signal.addEventListener("abort", cancel, { once: true });
      socket.once("error", (error) => {
        signal.removeEventListener("abort", cancel);
        reject(error);
      });
      socket.once("connect", () => {
        signal.removeEventListener("abort", cancel);
        socket.removeAllListeners("error");
        resolve(new RedisConnection(socket, onClose));
      });
    });
  }

  /** Sends one command; resolves with its reply, rejects with a RedisError reply. */
  command(...args: (string | number)[]): Promise<Reply> {
    if (this.#closed) return Promise.reject(this.#closed);
    let out = `*${args.length}\r\n`;
    for (const arg of args) out += `$${Buffer.byteLength(String(arg))}\r\n${arg}\r\n`;
    return new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.#socket.write(out);
    });
  }

  /** Says goodbye and waits for the server to close. */
  async end(): Promise<void> {
    if (this.#closed) return;
    const closed = new Promise<void>((resolve) => this.#socket.once("close", () => resolve()));
    await this.command("QUIT").catch(() => {});
    this.#socket.end();
    await closed;
  }

  /** Closes at once. */
  destroy(): void {
    this.#closed ??= new Error("closed by vmsnap");
    this.#socket.destroy();
  }

  #receive(chunk: Buffer): void {
    this.#buffer = this.#buffer.length ? Buffer.concat([this.#buffer, chunk]) : chunk;
    let at = 0;
    try {
      for (;;) {
        const parsed = parse(this.#buffer, at);
        if (!parsed) break;
        at = parsed[1];
        const waiter = this.#pending.shift();
        if (parsed[0] instanceof RedisError) waiter?.reject(parsed[0]);
        else waiter?.resolve(parsed[0]);
      }
    } catch (error) {
      this.#fail(error as Error);
      this.#socket.destroy();
    }
    this.#buffer = this.#buffer.subarray(at);
  }

  #fail(error: Error): void {
    this.#closed ??= error;
    for (const waiter of this.#pending.splice(0)) waiter.reject(error);
  }
}

/**
 * Reads `INFO` text into a map of fields.
 *
 * @example
 * ```ts
 * import { infoFields } from "./resp.ts";
 * infoFields("# Server\r\nredis_version:7.0.15\r\n").get("redis_version"); // "7.0.15"
 * ```
 */
export function infoFields(text: Reply): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of String(text).split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon > 0 && !line.startsWith("#")) fields.set(line.slice(0, colon), line.slice(colon + 1));
  }
  return fields;
}
