// jsonc-parser for the compiled binary, without its formatter: jsonc-parser's main module imports
// the formatter, whose module builds 1,200 indentation strings when it loads (~1 ms of every
// start; issue 12, bench/ANALYSIS.md). scripts/build.ts maps "jsonc-parser" here (tsconfig.json
// beside this file, for Bun's bundler only); Deno and the tests use the package itself.
export { createScanner } from "jsonc-parser/lib/esm/impl/scanner.js";
export { parse, parseTree } from "jsonc-parser/lib/esm/impl/parser.js";

// jsonc-parser's ParseErrorCode names, by value (its enum: 1 = InvalidSymbol ... 16).
const PARSE_ERROR_NAMES = [
  "InvalidSymbol",
  "InvalidNumberFormat",
  "PropertyNameExpected",
  "ValueExpected",
  "ColonExpected",
  "CommaExpected",
  "CloseBraceExpected",
  "CloseBracketExpected",
  "EndOfFileExpected",
  "InvalidCommentToken",
  "UnexpectedEndOfComment",
  "UnexpectedEndOfString",
  "UnexpectedEndOfNumber",
  "InvalidUnicode",
  "InvalidEscapeCharacter",
  "InvalidCharacter",
];

/** The name of a ParseErrorCode, as jsonc-parser's printParseErrorCode gives it. */
export function printParseErrorCode(code) {
  return PARSE_ERROR_NAMES[code - 1] ?? "<unknown ParseErrorCode>";
}
