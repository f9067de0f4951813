/**
 * Python's `str()` of a JSON scalar, as Azure's framework turns a script
 * parameter into an argument (`str(param)` after `json.load`): `1` → `"1"`,
 * `1.0` → `"1.0"`, `true` → `"True"`, `null` → `"None"`.
 *
 * @module
 */

/**
 * What Python prints for a JSON scalar read by `json.load`, given the literal
 * as written in the file (an integer literal stays exact at any size; any
 * other number is a float, printed the shortest way that reads back).
 *
 * @example
 * ```ts
 * import { pythonStr } from "./python_str.ts";
 * pythonStr("true"); // "True"
 * pythonStr("1e5"); // "100000.0"
 * ```
 */
export function pythonStr(literal: string): string {
  if (literal === "true") return "True";
  if (literal === "false") return "False";
  if (literal === "null") return "None";
  if (/^-?\d+$/.test(literal)) return BigInt(literal).toString();
  return pythonFloat(Number(literal));
}

/** Python's `repr(float)`: fixed notation for exponents -4..15, else `1e+16` style. */
function pythonFloat(value: number): string {
  if (Number.isNaN(value)) return "nan";
  if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
  const sign = value < 0 || Object.is(value, -0) ? "-" : "";
  // The shortest digits that read back, and the decimal exponent of the first one.
  const [mantissa, exp] = Math.abs(value).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const exponent = Number(exp);
  if (exponent < -4 || exponent >= 16) {
    const shown = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exponent).toString().padStart(2, "0");
    return `${sign}${shown}e${exponent < 0 ? "-" : "+"}${e}`;
  }
  if (exponent < 0) return `${sign}0.${"0".repeat(-exponent - 1)}${digits}`;
  const whole = digits.slice(0, exponent + 1).padEnd(exponent + 1, "0");
  const fraction = digits.slice(exponent + 1) || "0";
  return `${sign}${whole}.${fraction}`;
}
