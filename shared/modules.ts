/**
 * Uploaded modules: a module's source must parse as an ES module before it goes to the
 * grid, or every task importing it fails on every worker. Checked on the client at
 * upload, and again at the coordinator (a client is not trusted to have checked).
 */
import { parse } from 'acorn'

/**
 * Why `source` does not parse as an ES module (the parser's message with its line and
 * column), or undefined when it does.
 *
 * @example
 * ```ts
 * moduleSyntaxError('export const x = ')   // 'Unexpected token at line 1, column 18'
 * moduleSyntaxError('export const x = 1')  // undefined
 * ```
 */
export function moduleSyntaxError(source: string): string | undefined {
  try {
    parse(source, { ecmaVersion: 'latest', sourceType: 'module' })
    return undefined
  } catch (err) {
    const e = err as SyntaxError & { loc?: { line: number; column: number } }
    if (!(e instanceof SyntaxError)) throw err
    // acorn appends "(line:column)"; say it in words, columns from 1 like editors do
    const message = e.message.replace(/\s*\(\d+:\d+\)$/, '')
    return e.loc ? `${message} at line ${e.loc.line}, column ${e.loc.column + 1}` : message
  }
}
