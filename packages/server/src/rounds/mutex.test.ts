import { describe, expect, it } from 'vitest';
import { createMutex } from './mutex.js';

describe('mutex', () => {
  it('runs sections one at a time in call order, even when one fails', async () => {
    const mutex = createMutex();
    const log: string[] = [];
    const section = (name: string, ms: number, fail = false) => async () => {
      log.push(`${name}:start`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${name}:end`);
      if (fail) throw new Error(name);
      return name;
    };
    const results = await Promise.allSettled([mutex.run(section('a', 20)), mutex.run(section('b', 1, true)), mutex.run(section('c', 5))]);
    expect(log).toEqual(['a:start', 'a:end', 'b:start', 'b:end', 'c:start', 'c:end']);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
  });
});
