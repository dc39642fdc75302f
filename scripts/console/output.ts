/** How the console prints: readable tables for people, one JSON line with --json for programs, progress on stderr. */
import Table from 'cli-table3';

export function printTable(head: string[], rows: Array<Array<string | number>>): void {
  const table = new Table({ head, style: { head: process.stdout.isTTY ? ['cyan'] : [], border: process.stdout.isTTY ? ['grey'] : [] } });
  table.push(...rows.map((row) => row.map(String)));
  console.log(table.toString());
}

export const printJson = (value: unknown): void => console.log(JSON.stringify(value));

/**
 * Progress of a long operation, on stderr so stdout stays the answer: one rewritten line on a terminal, a line
 * per step otherwise (logs of a CI job or a kubectl exec).
 */
export class Progress {
  readonly #label: string;
  readonly #total: number | undefined;
  #done = 0;

  constructor(label: string, total?: number) {
    this.#label = label;
    this.#total = total;
  }

  advance(by: number): void {
    this.#done += by;
    const line = `${this.#label}: ${this.#done}${this.#total === undefined ? '' : `/${this.#total}`}`;
    if (process.stderr.isTTY) process.stderr.write(`\r${line}`);
    else process.stderr.write(`${line}\n`);
  }

  finish(): void {
    if (process.stderr.isTTY) process.stderr.write('\n');
  }
}

/** A fault the operator can act on: printed as one line, exit code 1. */
export class ConsoleError extends Error {
  override name = 'ConsoleError';
}
