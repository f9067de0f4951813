/**
 * What `vmsnap run` prints: with `--json`, JSON Lines on stdout (progress
 * events, then the result); without, a readable timeline on stderr and a
 * one-line verdict. The external handshake's `frozen` line goes to stdout in
 * both modes. The timeline is held while frozen (stderr may be a file on a
 * frozen filesystem); stdout events are not, because the caller needs them.
 *
 * @module
 */
import type { HandshakeFrozen, RunEvent } from "../protocol.ts";
import { redact } from "../secrets.ts";
import { escapeForTerminal } from "../sys/terminal.ts";

/** Where the run's output goes. */
export interface OutputStreams {
  stdout(text: string): void;
  stderr(text: string): void;
}

/** The run's output. */
export class Output {
  readonly json: boolean;
  #streams: OutputStreams;
  #held: string[] | undefined;
  #started = performance.now();

  constructor(json: boolean, streams: OutputStreams) {
    this.json = json;
    this.#streams = streams;
  }

  /** A progress event: a JSON line on stdout with --json. */
  event(event: RunEvent): void {
    if (this.json) this.#streams.stdout(redact(JSON.stringify(event)) + "\n");
  }

  /** The external handshake's line: on stdout in both modes, once. */
  handshake(event: HandshakeFrozen): void {
    this.#streams.stdout(redact(JSON.stringify(event)) + "\n");
  }

  /** A timeline line on stderr (without --json): `+0.123s  step  detail`. */
  say(step: string, detail: string): void {
    if (this.json) return;
    const at = ((performance.now() - this.#started) / 1000).toFixed(3);
    const line = escapeForTerminal(redact(`+${at}s  ${step.padEnd(10)} ${detail}`)) + "\n";
    if (this.#held) this.#held.push(line);
    else this.#streams.stderr(line);
  }

  /** The final line(s) on stderr without --json. */
  verdict(text: string): void {
    if (!this.json) this.#streams.stderr(escapeForTerminal(redact(text)) + "\n");
  }

  hold(): void {
    this.#held ??= [];
  }

  release(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const line of held) this.#streams.stderr(line);
  }
}
