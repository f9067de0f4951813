/**
 * The database plugins' shared lifecycle: `within` cancels and closes the
 * loser (real sockets), and a plugin whose server never finishes the login
 * closes its half-open connection.
 */
import assert from "node:assert/strict";
import { connect, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { PluginFailure, within } from "../../plugins/db_common.ts";
import { mysqlPlugin } from "../../plugins/mysql.ts";
import type { PluginEnv } from "../../plugins/plugin.ts";
import { waitFor } from "../helpers.ts";
import { dbDir, stallingProxy, startMariaDb } from "../db_servers.ts";

/** A TCP server that greets each client after `delayMs`; counts open connections. */
async function slowGreeter(delayMs: number) {
  const open = new Set<Socket>();
  const server = createServer((socket) => {
    open.add(socket);
    socket.on("close", () => open.delete(socket));
    socket.on("error", () => {});
    const timer = setTimeout(() => socket.write("hello"), delayMs);
    socket.on("close", () => clearTimeout(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    open: () => open.size,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Connects and resolves with the socket once the server has greeted. */
function greeted(port: number, onSocket: (s: Socket) => void = () => {}): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    onSocket(socket);
    socket.once("data", () => resolve(socket));
    socket.once("error", reject);
  });
}

Deno.test("within: a connection that arrives after the deadline is closed, not leaked", async () => {
  const greeter = await slowGreeter(300);
  try {
    let late: Socket | undefined;
    await assert.rejects(
      within({
        ms: 100,
        code: "PluginConnectFailed",
        message: "connecting took too long",
        dispose: (socket: Socket) => {
          late = socket;
          socket.destroy();
        },
      }, () => greeted(greeter.port)),
      (error: PluginFailure) =>
        error.code === "PluginConnectFailed" && error.message === "connecting took too long",
    );
    assert.equal(greeter.open(), 1, "the connect goes on after the deadline");
    await waitFor("the late connection", () => late !== undefined, 2000);
    await waitFor("the server to see it closed", () => greeter.open() === 0, 2000);
  } finally {
    await greeter.close();
  }
});

Deno.test("within: the deadline aborts the work's signal, so it can close what is half open", async () => {
  const greeter = await slowGreeter(60_000);
  try {
    await assert.rejects(
      within(
        { ms: 100, code: "PluginQuiesceTimeout", message: "no answer" },
        (signal) =>
          greeted(
            greeter.port,
            (socket) => signal.addEventListener("abort", () => socket.destroy()),
          ),
      ),
      (error: PluginFailure) => error.code === "PluginQuiesceTimeout" && error.unresponsive,
    );
    await waitFor("the server to see it closed", () => greeter.open() === 0, 2000);
  } finally {
    await greeter.close();
  }
});

Deno.test("within: the run's abort signal ends the wait at once with Interrupted", async () => {
  const run = new AbortController();
  const started = performance.now();
  setTimeout(() => run.abort(), 50);
  await assert.rejects(
    within(
      { ms: 60_000, code: "PluginQuiesceTimeout", message: "no answer", signal: run.signal },
      () => new Promise(() => {}),
    ),
    (error: PluginFailure) => error.code === "Interrupted",
  );
  assert.ok(performance.now() - started < 1000);
  // A value that wins is passed through and nothing is disposed.
  let disposed = false;
  assert.equal(
    await within({
      ms: 1000,
      code: "PluginQuiesceTimeout",
      message: "no answer",
      dispose: () => (disposed = true),
    }, () => Promise.resolve(7)),
    7,
  );
  assert.equal(disposed, false);
});

Deno.test({
  name:
    "mysql plugin: a server that never finishes the login: PluginConnectFailed within timeoutInSeconds, the half-open connection closed",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    // The client's login packet names the user: the proxy swallows it, so the login never ends.
    const silent = await stallingProxy({
      target: server.socket,
      socket: join(db.dir, "silent.sock"),
      stallWhen: /root/,
    });
    try {
      const runtime = mysqlPlugin.create({
        type: "mysql",
        name: "shop",
        socket: silent.socket,
        port: 3306,
        user: "root",
        mode: "auto",
        lockWaitTimeoutSeconds: 1,
        longQuerySeconds: 60,
        killLongQueries: false,
        timeoutInSeconds: 1,
        maxHoldSeconds: 10,
      });
      const env: PluginEnv = {
        runId: "t",
        stateDir: db.dir,
        configFile: join(db.dir, "none.json"),
        signal: new AbortController().signal,
        log: () => {},
      };
      const result = await runtime.quiesce(env);
      assert.ok(silent.stalled());
      assert.deepEqual(result.errors.map((e) => e.code), ["PluginConnectFailed"]);
      // The driver's own connect timeout (inside the budget) or the budget: either closes it.
      assert.match(result.errors[0].message, /ETIMEDOUT|took longer than timeoutInSeconds/);
      await waitFor("the half-open connection to close", () => silent.open() === 0, 3000);
      assert.equal((await runtime.resume(env)).skipped, true);
    } finally {
      await silent.close();
      await server.stop();
      db.cleanup();
    }
  },
});
