/**
 * The vmtest guest on the host side: boots QEMU (TCG, no network, virtio
 * disk, a virtio-serial channel for qemu-guest-agent and one for the vmsnap
 * relay, QMP), and talks to the guest through its agent: run a command
 * (`guest-exec` + `guest-exec-status`), read a file, freeze and thaw.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { connect, type Socket } from "node:net";
import { closeSync, existsSync, openSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { ChannelError, JsonChannel } from "./channel.ts";

/** What a guest command gave. */
export interface GuestRan {
  code: number;
  stdout: string;
  stderr: string;
}

/** How to boot the guest. */
export interface BootOptions {
  /** Working directory for sockets, the console log and disk overlays. */
  dir: string;
  /** The qcow2 the guest boots from (an overlay over the cached image). */
  disk: string;
  kernel: string;
  initrd: string;
  /** A raw ext4 image attached read-only as /dev/disk/by-id/virtio-vmtest-payload. */
  payload: string;
  memoryMiB: number;
  cpus: number;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A running guest. */
export class Guest {
  readonly qemu: ChildProcess;
  readonly dir: string;
  #qga?: JsonChannel;
  #qmp?: JsonChannel;
  /** The QMP node of the disk (`-drive id`). */
  readonly drive = "disk0";

  private constructor(qemu: ChildProcess, dir: string) {
    this.qemu = qemu;
    this.dir = dir;
  }

  /** Where the guest's serial console is written. */
  get consoleLog(): string {
    return join(this.dir, "console.log");
  }

  /**
   * Starts QEMU and waits until the guest agent answers; resolves with the
   * guest and how long the boot took.
   *
   * @example
   * ```ts
   * const { guest, bootMs } = await Guest.boot({ dir, disk, kernel, initrd, payload, memoryMiB: 1536, cpus: 2 });
   * ```
   */
  static async boot(options: BootOptions): Promise<{ guest: Guest; bootMs: number }> {
    const { dir } = options;
    const sock = (name: string) => join(dir, `${name}.sock`);
    const args = [
      "-accel",
      "tcg",
      "-cpu",
      "max",
      "-m",
      String(options.memoryMiB),
      "-smp",
      String(options.cpus),
      "-display",
      "none",
      "-monitor",
      "none",
      "-nic",
      "none",
      "-kernel",
      options.kernel,
      "-initrd",
      options.initrd,
      "-append",
      "root=/dev/vda rw console=ttyS0 quiet",
      "-drive",
      `if=none,id=disk0,file=${options.disk},format=qcow2`,
      "-device",
      "virtio-blk-pci,drive=disk0",
      "-drive",
      `if=none,id=payload,file=${options.payload},format=raw,readonly=on`,
      "-device",
      "virtio-blk-pci,drive=payload,serial=vmtest-payload",
      "-device",
      "virtio-serial-pci",
      "-chardev",
      `socket,id=qga0,path=${sock("qga")},server=on,wait=off`,
      "-device",
      "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
      "-chardev",
      `socket,id=relay0,path=${sock("relay")},server=on,wait=off`,
      "-device",
      "virtserialport,chardev=relay0,name=org.vmsnap.relay",
      "-qmp",
      `unix:${sock("qmp")},server=on,wait=off`,
      "-serial",
      `file:${join(dir, "console.log")}`,
    ];
    const started = performance.now();
    const out = openSync(join(dir, "qemu.log"), "a");
    const qemu = spawn("qemu-system-x86_64", args, { stdio: ["ignore", out, out] });
    closeSync(out);
    const guest = new Guest(qemu, dir);
    const exited = new Promise<never>((_, reject) =>
      qemu.once("exit", (code) => reject(new Error(`qemu exited (${code}); see ${dir}/qemu.log`)))
    );
    exited.catch(() => {});
    const deadline = performance.now() + 600_000;
    for (;;) {
      if (qemu.exitCode !== null) await exited;
      if (performance.now() > deadline) {
        guest.kill();
        throw new Error(`the guest agent did not answer within 600 s; see ${guest.consoleLog}`);
      }
      if (existsSync(sock("qga"))) {
        try {
          guest.#qga = await JsonChannel.qga(sock("qga"), 3000);
          break;
        } catch {
          // not up yet
        }
      }
      await sleep(1000);
    }
    const bootMs = performance.now() - started;
    guest.#qmp = await JsonChannel.qmp(sock("qmp"));
    return { guest, bootMs };
  }

  /** The guest agent, reconnected when an earlier command timed out. */
  async qga(): Promise<JsonChannel> {
    if (!this.#qga || this.#qga.closed) {
      this.#qga = await JsonChannel.qga(join(this.dir, "qga.sock"), 10_000);
    }
    return this.#qga;
  }

  /** QMP. */
  get qmp(): JsonChannel {
    return this.#qmp!;
  }

  /**
   * Starts a command in the guest and returns its pid (no output captured).
   *
   * @example
   * ```ts
   * const pid = await guest.spawn(["/usr/local/lib/vmtest/writer.sh", "mysql", "c1"]);
   * ```
   */
  async spawn(argv: string[], capture = false): Promise<number> {
    const qga = await this.qga();
    const reply = await qga.execute("guest-exec", {
      path: argv[0],
      arg: argv.slice(1),
      "capture-output": capture,
    }) as { pid: number };
    return reply.pid;
  }

  /** The status of a command started with spawn; undefined while it runs. */
  async status(pid: number): Promise<GuestRan | undefined> {
    const qga = await this.qga();
    const s = await qga.execute("guest-exec-status", { pid }) as {
      exited: boolean;
      exitcode?: number;
      signal?: number;
      "out-data"?: string;
      "err-data"?: string;
    };
    if (!s.exited) return undefined;
    const decode = (data?: string) => data ? Buffer.from(data, "base64").toString("utf8") : "";
    return {
      code: s.exitcode ?? 128 + (s.signal ?? 0),
      stdout: decode(s["out-data"]),
      stderr: decode(s["err-data"]),
    };
  }

  /** Waits for a spawned command; throws after `timeoutMs`. */
  async wait(pid: number, timeoutMs: number): Promise<GuestRan> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const done = await this.status(pid);
      if (done) return done;
      if (performance.now() > deadline) {
        throw new Error(`guest command (pid ${pid}) still running after ${timeoutMs} ms`);
      }
      await sleep(250);
    }
  }

  /**
   * Runs a command in the guest and returns its exit code and output.
   *
   * @example
   * ```ts
   * const { code, stdout } = await guest.exec(["uname", "-r"]);
   * ```
   */
  async exec(argv: string[], timeoutMs = 120_000): Promise<GuestRan> {
    return this.wait(await this.spawn(argv, true), timeoutMs);
  }

  /** `sh -c script` in the guest; throws when it exits non-zero. */
  async sh(script: string, timeoutMs = 120_000): Promise<string> {
    const ran = await this.exec(["/bin/sh", "-c", script], timeoutMs);
    if (ran.code !== 0) {
      throw new Error(`guest: sh -c '${script}' exited ${ran.code}: ${ran.stderr}${ran.stdout}`);
    }
    return ran.stdout;
  }

  /** Reads a (small) file in the guest through the agent (no process started). */
  async readFile(path: string): Promise<string> {
    const qga = await this.qga();
    const handle = await qga.execute("guest-file-open", { path, mode: "r" }) as number;
    try {
      let text = "";
      for (;;) {
        const chunk = await qga.execute("guest-file-read", { handle, count: 65536 }) as {
          "buf-b64": string;
          eof: boolean;
        };
        text += Buffer.from(chunk["buf-b64"], "base64").toString("utf8");
        if (chunk.eof) return text;
      }
    } finally {
      await qga.execute("guest-file-close", { handle });
    }
  }

  /**
   * Connects to the relay channel (the guest's /dev/virtio-ports/org.vmsnap.relay).
   *
   * @example
   * ```ts
   * const relay = await guest.relay();
   * ```
   */
  relay(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = connect(join(this.dir, "relay.sock"));
      socket.once("connect", () => resolve(socket));
      socket.once("error", reject);
    });
  }

  /**
   * Takes an external snapshot of the disk: the current image becomes the
   * point-in-time copy, writes go to a new overlay `next`. Returns the
   * snapshot's image (the chain to read) and how long QMP took.
   *
   * @example
   * ```ts
   * const { image } = await guest.snapshot("/var/tmp/vm/s1.qcow2");
   * ```
   */
  async snapshot(next: string): Promise<{ image: string; ms: number }> {
    const block = await this.qmp.execute("query-block") as {
      device: string;
      inserted?: { file: string };
    }[];
    const image = block.find((b) => b.device === this.drive)!.inserted!.file;
    const started = performance.now();
    await this.qmp.execute("blockdev-snapshot-sync", {
      device: this.drive,
      "snapshot-file": next,
      format: "qcow2",
    });
    return { image, ms: performance.now() - started };
  }

  /** Powers the guest off (QMP quit) and waits for QEMU to exit. */
  async stop(): Promise<void> {
    if (this.qemu.exitCode !== null) return;
    const exited = new Promise((resolve) => this.qemu.once("exit", resolve));
    try {
      await this.#qmp?.execute("quit", undefined, 10_000);
    } catch (error) {
      if (!(error instanceof ChannelError)) throw error;
    }
    await Promise.race([exited, sleep(15_000)]);
    this.kill();
  }

  /** SIGKILLs QEMU (cleanup). */
  kill(): void {
    this.#qga?.close();
    this.#qmp?.close();
    if (this.qemu.exitCode === null && this.qemu.pid) {
      try {
        process.kill(this.qemu.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  }
}
