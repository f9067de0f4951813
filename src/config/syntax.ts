/**
 * The config's text as a syntax tree: JSONC (comments and trailing commas
 * allowed), parsed by jsonc-parser, each syntax error said in words with
 * where it stands, and nesting bounded before the recursive parser sees it.
 *
 * @module
 */
import {
  createScanner,
  type Node,
  type ParseError,
  parseTree,
  printParseErrorCode,
} from "jsonc-parser";

/** The deepest nesting accepted. */
const MAX_DEPTH = 32;

/** A 1-based line and column in the config file. */
export interface Location {
  line: number;
  column: number;
}

/** Turns offsets into line and column (1-based, columns count UTF-16 units). */
export class SourceMap {
  #lineStarts: number[] = [0];
  #text: string;

  constructor(text: string) {
    this.#text = text;
    for (let i = 0; i < text.length; i++) {
      if (text.charCodeAt(i) === 10) this.#lineStarts.push(i + 1);
    }
  }

  /** The location of a character offset. */
  at(offset: number): Location {
    let low = 0;
    let high = this.#lineStarts.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (this.#lineStarts[mid] <= offset) low = mid;
      else high = mid - 1;
    }
    return { line: low + 1, column: offset - this.#lineStarts[low] + 1 };
  }

  /** The text of a node as written (a number's literal: `1.0` stays `1.0`). */
  raw(node: Node): string {
    return this.#text.slice(node.offset, node.offset + node.length);
  }
}

/** jsonc-parser's SyntaxKind values (a const enum, which isolated modules cannot import). */
const TOKEN = { openBrace: 1, closeBrace: 2, openBracket: 3, closeBracket: 4, eof: 17 } as const;

/** Refuses nesting deeper than MAX_DEPTH before the recursive parser sees it. */
function tooDeep(text: string): number | undefined {
  const scanner = createScanner(text, false);
  let depth = 0;
  for (let token = scanner.scan(); token !== TOKEN.eof; token = scanner.scan()) {
    if (token === TOKEN.openBrace || token === TOKEN.openBracket) {
      if (++depth > MAX_DEPTH) return scanner.getTokenOffset();
    } else if (token === TOKEN.closeBrace || token === TOKEN.closeBracket) {
      depth--;
    }
  }
  return undefined;
}

/** True when the text holds nothing but whitespace and comments. */
function isBlank(text: string): boolean {
  return createScanner(text, true).scan() === TOKEN.eof;
}

/** jsonc-parser's error names, said in words. */
const SYNTAX_WORDS: Record<string, string> = {
  InvalidSymbol:
    "this is not a JSON value (strings need double quotes; true, false, null are lower case)",
  InvalidNumberFormat: "a malformed number",
  PropertyNameExpected: "a key in double quotes is expected here",
  ValueExpected: "a value is expected here",
  ColonExpected: "a colon (:) is missing after the key",
  CommaExpected: "a comma is missing between two entries (at the end of the entry before)",
  CloseBraceExpected: "a } is missing to close the object",
  CloseBracketExpected: "a ] is missing to close the list",
  EndOfFileExpected: "there is more after the end of the config object",
  InvalidCommentToken: "a malformed comment",
  UnexpectedEndOfComment: "a /* comment is not closed with */",
  UnexpectedEndOfString: "a string is not closed with a double quote",
  UnexpectedEndOfNumber: "a number ends too early",
  InvalidUnicode: "a malformed \\u escape (four hex digits expected)",
  InvalidEscapeCharacter: "an invalid escape after a backslash (write \\\\ for a backslash)",
  InvalidCharacter: "a control character inside a string (write \\t or \\n)",
};

/** One syntax error in words, with the text found where it is short. */
function syntaxInWords(error: ParseError, text: string): string {
  const name = printParseErrorCode(error.error);
  const found = text.slice(error.offset, error.offset + error.length);
  if (name === "InvalidSymbol" && found.trim() !== "" && found.length <= 40) {
    return `${found} is not a JSON value (strings need double quotes; true, false, null are lower case)`;
  }
  const words = SYNTAX_WORDS[name] ?? name;
  return error.offset >= text.length ? `${words} (at the end of the file)` : words;
}

/** A syntax error: where it stands (a character offset) and what it says. */
export interface ConfigSyntaxError {
  offset: number;
  message: string;
}

/** The config's syntax tree, or the syntax errors that keep it from being one. */
export type ParsedSyntax = { root: Node; errors: [] } | {
  root?: undefined;
  errors: ConfigSyntaxError[];
};

/**
 * Parses config text into its syntax tree: a JSON object, comments and
 * trailing commas allowed. An empty file, nesting deeper than 32 levels,
 * invalid JSON or a value other than an object come back as errors, each
 * with its offset and a message that says what is wrong in words.
 *
 * @example
 * ```ts
 * import { parseSyntax } from "./syntax.ts";
 * parseSyntax('{ "fsFreezeEnabled": false, // no freeze\n}').errors.length; // 0
 * parseSyntax("{ 'a': 1 }").errors[0].message; // "invalid JSON: 'a' is not a JSON value (…"
 * ```
 */
export function parseSyntax(text: string): ParsedSyntax {
  if (isBlank(text)) {
    return {
      errors: [{
        offset: 0,
        message:
          `the file is empty; a config is a JSON object. Fix: start from Azure's sample ({ "pluginName": "ScriptRunner", "preScriptLocation": "", ... }).`,
      }],
    };
  }
  const deep = tooDeep(text);
  if (deep !== undefined) {
    return {
      errors: [{
        offset: deep,
        message:
          `nesting deeper than ${MAX_DEPTH} levels; a vmsnap config is at most 4 levels deep.`,
      }],
    };
  }
  const found: ParseError[] = [];
  const root = parseTree(text, found, { allowTrailingComma: true, disallowComments: false });
  if (found.length > 0) {
    return {
      errors: found.map((error) => ({
        offset: error.offset,
        message: `invalid JSON: ${
          syntaxInWords(error, text)
        }. Fix: correct the syntax here (comments and trailing commas are allowed).`,
      })),
    };
  }
  if (root?.type !== "object") {
    return {
      errors: [{
        offset: root?.offset ?? 0,
        message: `the config must be a JSON object ({ ... }), found ${
          root ? `a ${root.type}` : "nothing"
        }.`,
      }],
    };
  }
  return { root, errors: [] };
}
