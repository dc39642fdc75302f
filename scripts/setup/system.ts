/**
 * What the set-up asks of the machine, behind one interface so the unit tests can stand in a machine without
 * packages, without root or without a network (test/unit/setup.test.ts): files, commands on PATH, child
 * processes (output streamed line by line into a log), the clock and the one place progress is printed.
 */
import { spawn } from 'node:child_process';
import { accessSync, appendFileSync, chmodSync, constants, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** each line of output as it arrives */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** a file the whole output is appended to */
  logFile?: string;
}

export interface RunResult {
  /** the exit code; 127 when the command could not be started */
  code: number;
  /** the last lines of stdout and stderr together */
  tail: string[];
}

export interface System {
  isRoot(): boolean;
  exists(path: string): boolean;
  /** the command's path on PATH, or undefined */
  which(command: string): string | undefined;
  run(command: string, args: string[], options?: RunOptions): Promise<RunResult>;
  writeExecutable(path: string, text: string): void;
  remove(path: string): void;
  now(): number;
  /** one line of progress for the person watching */
  print(line: string): void;
}

const TAIL_LINES = 40;

export const realSystem: System = {
  isRoot: () => process.getuid?.() === 0,
  exists: (path) => existsSync(path),
  which(command) {
    for (const dir of (process.env.PATH ?? '').split(delimiter)) {
      if (!dir) continue;
      const path = join(dir, command);
      try {
        accessSync(path, constants.X_OK);
        return path;
      } catch {
        // not in this directory
      }
    }
    return undefined;
  },
  run(command, args, options = {}) {
    if (options.logFile) {
      mkdirSync(dirname(options.logFile), { recursive: true });
      appendFileSync(options.logFile, `\n$ ${command} ${args.join(' ')}   (${new Date().toISOString()})\n`);
    }
    return new Promise((resolveRun) => {
      const tail: string[] = [];
      const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
      const follow = (stream: NodeJS.ReadableStream, name: 'stdout' | 'stderr') => {
        let pending = '';
        stream.setEncoding('utf8');
        stream.on('data', (chunk: string) => {
          if (options.logFile) appendFileSync(options.logFile, chunk);
          pending += chunk;
          const lines = pending.split(/\r?\n/);
          pending = lines.pop() ?? '';
          for (const line of lines) take(line, name);
        });
        stream.on('end', () => {
          if (pending) take(pending, name);
        });
      };
      const take = (line: string, name: 'stdout' | 'stderr') => {
        tail.push(line);
        if (tail.length > TAIL_LINES) tail.shift();
        options.onLine?.(line, name);
      };
      follow(child.stdout, 'stdout');
      follow(child.stderr, 'stderr');
      child.once('error', (err) => resolveRun({ code: 127, tail: [...tail, err.message] }));
      child.once('close', (code, signal) => resolveRun({ code: code ?? (signal ? 128 : 1), tail }));
    });
  },
  writeExecutable(path, text) {
    writeFileSync(path, text);
    chmodSync(path, 0o755);
  },
  remove: (path) => rmSync(path, { recursive: true, force: true }),
  now: () => performance.now(),
  print: (line) => process.stderr.write(`${line}\n`),
};

/** "4.2s", "3m05s" */
export function duration(ms: number): string {
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, '0')}s`;
}

/** One line per step, each stamped with the time since the set-up began. */
export class Progress {
  private readonly system: System;
  private readonly started: number;
  constructor(system: System, started = system.now()) {
    this.system = system;
    this.started = started;
  }
  elapsed(): number {
    return this.system.now() - this.started;
  }
  step(text: string): void {
    this.system.print(`setup [${duration(this.elapsed()).padStart(6)}] ${text}`);
  }
}

/**
 * The set-up cannot go on: `line` says what is missing and the command that gets it. Printed alone, without a
 * stack trace, by whoever started the set-up.
 */
export class SetupStopped extends Error {
  readonly line: string;
  constructor(line: string) {
    super(line);
    this.line = line;
    this.name = 'SetupStopped';
  }
}
