/**
 * A real etcd (Debian's etcd-server) for the group tests: one node, or a
 * three-node cluster, on loopback (and on any extra address given, such as
 * the bridge the members' network namespaces hang from), on free ports, with
 * a private data directory on tmpfs. Never a system service. Optionally
 * TLS with client certificates ({@linkcode makePki}), and authentication
 * ({@linkcode etcdctl} as root).
 *
 * Always `stop()` in a `finally`: it kills the nodes and removes the data.
 *
 * @module
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import process from "node:process";

/** PEM files of a test CA, etcd's server certificate and clients' certificates. */
export interface Pki {
  dir: string;
  caFile: string;
  serverCert: string;
  serverKey: string;
  /**
   * A client certificate and key signed by the CA, with CN = name, or
   * without a CN (`O=vmsnap, OU=name`) when `cn` is false: etcd refuses a
   * certificate with a CN on its JSON gateway while authentication is on.
   */
  client(name: string, options?: { cn?: boolean }): { certFile: string; keyFile: string };
}

/** One etcd process. */
export interface EtcdNode {
  name: string;
  /** Its client URL on loopback. */
  endpoint: string;
  /** Its client URLs on the extra hosts, in their order. */
  extraEndpoints: string[];
  pid(): number | undefined;
  /** Sends a signal (SIGKILL, SIGSTOP, SIGCONT). */
  signal(signal: NodeJS.Signals): void;
  /** Stops it (SIGTERM, then SIGKILL) and waits for its exit. */
  stop(): Promise<void>;
  /** Starts it again on the same data and ports. */
  start(): Promise<void>;
  running(): boolean;
}

/** A running etcd (one node or a cluster). */
export interface EtcdCluster {
  nodes: EtcdNode[];
  /** Every node's loopback client URL. */
  endpoints: string[];
  /** The client URLs of every node on extra host `i`. */
  extraEndpoints(i: number): string[];
  tls?: Pki;
  /** The node that leads now. */
  leader(): Promise<EtcdNode>;
  /** Kills every node and removes the data. */
  stop(): Promise<void>;
}

const ROOT_DIR = "/dev/shm";

/**
 * A free TCP port on loopback (the kernel's choice; the port is released
 * before it is returned, so it is only very likely free).
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/**
 * Makes a CA, a server certificate for 127.0.0.1, localhost and the extra
 * addresses, and client certificates on demand (EC P-256, openssl).
 */
export function makePki(dir: string, serverAddresses: string[] = []): Pki {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  ssl(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "2",
    "-subj",
    "/CN=vmsnap-test-ca",
  );
  const sign = (name: string, ext: string, subject = `/CN=${name}`) => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    ssl("req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject);
    ssl(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    );
  };
  const sans = ["IP:127.0.0.1", "DNS:localhost", ...serverAddresses.map((a) => `IP:${a}`)];
  sign("server", `subjectAltName=${sans.join(",")}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  const clients = new Set<string>();
  return {
    dir,
    caFile: join(dir, "ca.crt"),
    serverCert: join(dir, "server.crt"),
    serverKey: join(dir, "server.key"),
    client(name: string, options: { cn?: boolean } = {}) {
      const file = options.cn === false ? `${name}-nocn` : name;
      if (!clients.has(file)) {
        const subject = options.cn === false ? `/O=vmsnap/OU=${name}` : `/CN=${name}`;
        sign(file, "extendedKeyUsage=clientAuth\n", subject);
        clients.add(file);
      }
      return { certFile: join(dir, `${file}.crt`), keyFile: join(dir, `${file}.key`) };
    },
  };
}

/**
 * Starts etcd: `nodes` (1 or 3) on loopback and on every `extraHosts`
 * address (which must exist), HTTPS with client certificates when `tls`.
 */
export async function startEtcd(
  options: { nodes?: 1 | 3; extraHosts?: string[]; tls?: Pki; extraArgs?: string[] } = {},
): Promise<EtcdCluster> {
  const count = options.nodes ?? 1;
  const dataRoot = mkdtempSync(join(ROOT_DIR, "vmsnap-etcd-"));
  const scheme = options.tls ? "https" : "http";
  const ports: { client: number; peer: number }[] = [];
  for (let i = 0; i < count; i++) ports.push({ client: await freePort(), peer: await freePort() });
  const names = ports.map((_, i) => `n${i + 1}`);
  const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[i].peer}`).join(",");
  const nodes = names.map((name, i) =>
    etcdNode({
      name,
      dataRoot,
      scheme,
      port: ports[i].client,
      peerPort: ports[i].peer,
      extraHosts: options.extraHosts ?? [],
      initialCluster,
      tls: options.tls,
      extraArgs: options.extraArgs ?? [],
    })
  );
  const cluster: EtcdCluster = {
    nodes,
    endpoints: nodes.map((n) => n.endpoint),
    extraEndpoints: (i) => nodes.map((n) => n.extraEndpoints[i]),
    tls: options.tls,
    leader: () => findLeader(cluster),
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop()));
      rmSync(dataRoot, { recursive: true, force: true });
    },
  };
  try {
    await Promise.all(nodes.map((n) => n.start()));
    await findLeader(cluster);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

function etcdNode(o: {
  name: string;
  dataRoot: string;
  scheme: string;
  port: number;
  peerPort: number;
  extraHosts: string[];
  initialCluster: string;
  tls?: Pki;
  extraArgs: string[];
}): EtcdNode {
  const endpoint = `${o.scheme}://127.0.0.1:${o.port}`;
  const extraEndpoints = o.extraHosts.map((h) => `${o.scheme}://${h}:${o.port}`);
  const clientUrls = [endpoint, ...extraEndpoints].join(",");
  const peer = `http://127.0.0.1:${o.peerPort}`;
  const args = [
    "--name",
    o.name,
    "--data-dir",
    join(o.dataRoot, o.name),
    "--listen-client-urls",
    clientUrls,
    "--advertise-client-urls",
    clientUrls,
    "--listen-peer-urls",
    peer,
    "--initial-advertise-peer-urls",
    peer,
    "--initial-cluster",
    o.initialCluster,
    "--initial-cluster-token",
    `vmsnap-test-${process.pid}`,
    "--initial-cluster-state",
    "new",
    "--logger",
    "zap",
    "--log-outputs",
    "stderr",
    ...(o.tls
      ? [
        "--cert-file",
        o.tls.serverCert,
        "--key-file",
        o.tls.serverKey,
        "--client-cert-auth",
        "--trusted-ca-file",
        o.tls.caFile,
      ]
      : []),
    ...o.extraArgs,
  ];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const node: EtcdNode = {
    name: o.name,
    endpoint,
    extraEndpoints,
    pid: () => child?.pid,
    running: () => child !== undefined && child.exitCode === null && child.signalCode === null,
    // process.kill, not child.kill: Deno stops noticing a child's exit after child.kill("SIGCONT").
    signal: (signal) => {
      if (node.running()) process.kill(child!.pid!, signal);
    },
    start: async () => {
      const log = openSync(join(o.dataRoot, `${o.name}.log`), "a");
      child = spawn("etcd", args, { stdio: ["ignore", log, log] });
      exited = new Promise((resolve) => child!.on("exit", () => resolve()));
      await waitHealthy(endpoint, o.tls, () => node.running());
    },
    stop: async () => {
      if (!node.running()) return;
      node.signal("SIGCONT");
      node.signal("SIGTERM");
      const timer = setTimeout(() => node.signal("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
  return node;
}

/** etcdctl's flags to reach these endpoints (and authenticate as `user`). */
export function etcdctlFlags(cluster: EtcdCluster, user?: string): string[] {
  const flags = [`--endpoints=${cluster.endpoints.join(",")}`, "--command-timeout=5s"];
  if (cluster.tls) {
    const root = cluster.tls.client("root");
    flags.push(
      `--cacert=${cluster.tls.caFile}`,
      `--cert=${root.certFile}`,
      `--key=${root.keyFile}`,
    );
  }
  if (user) flags.push(`--user=${user}`);
  return flags;
}

/**
 * Runs etcdctl (v3 API) against the cluster; `input` goes to its stdin.
 * Throws with etcdctl's output when it fails.
 */
export function etcdctl(
  cluster: EtcdCluster,
  args: string[],
  options: { user?: string; input?: string } = {},
): string {
  const ran = spawnSync("etcdctl", [...etcdctlFlags(cluster, options.user), ...args], {
    env: { ...process.env, ETCDCTL_API: "3" },
    input: options.input ?? "",
    encoding: "utf8",
  });
  if (ran.status !== 0) {
    throw new Error(`etcdctl ${args.join(" ")}: exit ${ran.status}\n${ran.stdout}${ran.stderr}`);
  }
  return ran.stdout;
}

/** Polls `etcdctl endpoint health` until the endpoint answers (10 s at most). */
async function waitHealthy(
  endpoint: string,
  tls: Pki | undefined,
  running: () => boolean,
): Promise<void> {
  const flags = [`--endpoints=${endpoint}`, "--command-timeout=1s"];
  if (tls) {
    const root = tls.client("root");
    flags.push(`--cacert=${tls.caFile}`, `--cert=${root.certFile}`, `--key=${root.keyFile}`);
  }
  const until = Date.now() + 10_000;
  while (Date.now() < until) {
    if (!running()) throw new Error(`etcd at ${endpoint} exited at start`);
    const ran = spawnSync("etcdctl", [...flags, "endpoint", "status"], {
      env: { ...process.env, ETCDCTL_API: "3" },
      encoding: "utf8",
    });
    if (ran.status === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`etcd at ${endpoint} did not answer within 10 s`);
}

/** The node whose status says it leads (waits for an election, 10 s at most). */
async function findLeader(cluster: EtcdCluster): Promise<EtcdNode> {
  const until = Date.now() + 10_000;
  while (Date.now() < until) {
    const live = cluster.nodes.filter((n) => n.running());
    const ran = spawnSync("etcdctl", [
      ...etcdctlFlags({ ...cluster, endpoints: live.map((n) => n.endpoint) }),
      "endpoint",
      "status",
      "-w",
      "json",
    ], { env: { ...process.env, ETCDCTL_API: "3" }, encoding: "utf8" });
    try {
      // Member IDs are uint64: kept as text (JSON numbers would lose their last digits).
      const statuses = JSON.parse(ran.stdout.replace(/:\s*(\d{15,})/g, ':"$1"')) as {
        Endpoint: string;
        Status: { header: { member_id: string }; leader: string };
      }[];
      const leading = statuses.find((s) =>
        s.Status.leader !== "0" && String(s.Status.header.member_id) === String(s.Status.leader)
      );
      const node = leading && live.find((n) => n.endpoint === leading.Endpoint);
      if (node) return node;
    } catch {
      // not all up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("etcd elected no leader within 10 s");
}
