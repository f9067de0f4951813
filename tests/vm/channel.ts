/**
 * A JSON command channel over a unix socket: QEMU's QMP monitor and the
 * guest agent (qemu-ga) speak the same `{"execute": ..., "arguments": ...}`
 * protocol. QMP greets and needs `qmp_capabilities`; qemu-ga needs a
 * `guest-sync-delimited` handshake to drop stale replies from an earlier
 * client. One command at a time.
 *
 * @module
 */
import { connect, type Socket } from "node:net";

/** A reply's error, as QEMU sends it. */
export class ChannelError extends Error {
  constructor(message: string, readonly errorClass: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** One connection to QMP or qemu-ga. */
export class JsonChannel {
  #socket: Socket;
  #buffer = "";
  #waiters: ((message: Record<string, unknown>) => void)[] = [];
  #closed = false;
  /** QMP events received (QMP only), oldest first. */
  readonly events: Record<string, unknown>[] = [];

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      // guest-sync-delimited puts a 0xFF byte before its reply.
      this.#buffer += chunk.replaceAll("\xff", "");
      let newline;
      while ((newline = this.#buffer.indexOf("\n")) >= 0) {
        const line = this.#buffer.slice(0, newline).trim();
        this.#buffer = this.#buffer.slice(newline + 1);
        if (!line) continue;
        const message = JSON.parse(Buffer.from(line, "latin1").toString("utf8"));
        if ("event" in message) this.events.push(message);
        else this.#waiters.shift()?.(message);
      }
    });
    socket.on("close", () => {
      this.#closed = true;
      for (const waiter of this.#waiters.splice(0)) waiter({ closed: true });
    });
    socket.on("error", () => {});
  }

  /**
   * Connects to a QMP socket and negotiates capabilities.
   *
   * @example
   * ```ts
   * const qmp = await JsonChannel.qmp("/run/vm/qmp.sock");
   * await qmp.execute("query-status");
   * ```
   */
  static async qmp(path: string): Promise<JsonChannel> {
    const channel = new JsonChannel(await open(path));
    await channel.#next(10_000); // the greeting
    await channel.execute("qmp_capabilities");
    return channel;
  }

  /**
   * Connects to qemu-ga's socket and synchronizes (drops replies meant for an
   * earlier client). Throws when the agent does not answer within `timeoutMs`.
   *
   * @example
   * ```ts
   * const qga = await JsonChannel.qga("/run/vm/qga.sock", 5000);
   * await qga.execute("guest-ping");
   * ```
   */
  static async qga(path: string, timeoutMs: number): Promise<JsonChannel> {
    const channel = new JsonChannel(await open(path));
    const id = Math.floor(Math.random() * 2 ** 31);
    try {
      for (;;) {
        const reply = await channel.execute("guest-sync-delimited", { id }, timeoutMs);
        if (reply === id) return channel;
      }
    } catch (error) {
      channel.close();
      throw error;
    }
  }

  /** The next message that is not an event. */
  #next(timeoutMs: number): Promise<Record<string, unknown>> {
    if (this.#closed) return Promise.reject(new ChannelError("the socket is closed", "Closed"));
    return new Promise((resolve, reject) => {
      const waiter = (message: Record<string, unknown>) => {
        clearTimeout(timer);
        resolve(message);
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        // A late reply would be taken for the next command's: this connection is done.
        this.close();
        reject(new ChannelError(`no reply within ${timeoutMs} ms`, "Timeout"));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /**
   * Runs one command and returns its `return` value; a QEMU error, a closed
   * socket or no reply within `timeoutMs` throws a ChannelError.
   *
   * @example
   * ```ts
   * await qmp.execute("blockdev-snapshot-sync", { device: "disk0", "snapshot-file": "/v/s1.qcow2", format: "qcow2" });
   * ```
   */
  async execute(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = 30_000,
  ): Promise<unknown> {
    const reply = this.#next(timeoutMs);
    this.#socket.write(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) }));
    const message = await reply;
    if (message.closed) throw new ChannelError(`${command}: the socket closed`, "Closed");
    if (message.error) {
      const error = message.error as { class: string; desc: string };
      throw new ChannelError(`${command}: ${error.desc}`, error.class);
    }
    return message.return;
  }

  /** Whether the connection is closed (by either side, or after a timeout). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Closes the connection. */
  close(): void {
    this.#closed = true;
    this.#socket.destroy();
  }
}

function open(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}
