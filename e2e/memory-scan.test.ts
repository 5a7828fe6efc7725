/**
 * The process-memory scanner the secret scans rely on (e2e/memory-scan.ts): a child process holds
 * byte strings at awkward places (across a page boundary next to a zero page, at every offset
 * mod 16, inside mostly-zero memory, with zero bytes of their own, shorter than the anchored
 * search); the scan must report exactly those, and none of the absent ones.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { expect, test } from 'vitest';
import { scanProcessMemory, type Needle } from './memory-scan.js';
import { exited } from './support.js';

const MB = 1024 * 1024;

test('finds needles at any offset, across zero pages and page boundaries, and nothing else', async () => {
  // Ternary-like needles (many zero bytes), random ones, and short ones.
  const ternary = (n: number): Buffer => Buffer.from(Array.from(randomBytes(n), (b) => [0, 1, 255][b % 3]!));
  const present: Array<{ needle: Needle; at: number }> = [];
  // 64 MB of zeros, with needles placed: just before and after a page boundary whose next page stays zero,
  // and at offsets 0..15 mod 16 from a page start.
  const place = (name: string, bytes: Buffer, at: number): void => {
    present.push({ needle: { name, bytes }, at });
  };
  place('random, ends 10 bytes into a zero page', randomBytes(64), 8 * MB + 4096 * 3 - 54);
  place('ternary, starts 5 bytes before a zero page', ternary(64), 16 * MB - 5);
  place('ternary, last bytes of the buffer', ternary(64), 64 * MB - 64);
  place('short (20 bytes), alone in zero memory', randomBytes(20), 40 * MB + 123);
  // Needles whose part in the neighbouring page is all zeros, so that page stays a zero page (the
  // buffer's data starts a few bytes past a page boundary, 16 with glibc: the long zero runs make a
  // page boundary fall inside them for any such start below 1,000 bytes).
  place('random then 2,000 zero bytes, the zeros reaching into a zero page', Buffer.concat([randomBytes(8), Buffer.alloc(2000)]), 44 * MB - 1008);
  place('2,000 zero bytes then random, the zeros reaching back into a zero page', Buffer.concat([Buffer.alloc(2000), randomBytes(8)]), 52 * MB - 1000);
  for (let r = 0; r < 16; r++) place(`random 32 bytes at offset ${r} mod 16`, randomBytes(32), 24 * MB + r * 4096 + r);
  const absent: Needle[] = [
    ...Array.from({ length: 20 }, (_, i) => ({ name: `absent ternary ${i}`, bytes: ternary(64) })),
    ...Array.from({ length: 5 }, (_, i) => ({ name: `absent short ${i}`, bytes: randomBytes(12) })),
  ];
  const layout = present.map((p) => ({ at: p.at, hex: p.needle.bytes.toString('hex') }));
  const script = `
    const b = Buffer.alloc(${64 * MB});
    for (const { at, hex } of ${JSON.stringify(layout)}) b.write(hex, at, 'hex'); // straight into b: no other copy of the bytes
    setInterval(() => b[0], 60_000);
    console.log('ready');`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise((resolve) => createInterface({ input: child.stdout! }).once('line', resolve));
    const scan = await scanProcessMemory(child.pid!, [...present.map((p) => p.needle), ...absent]);
    expect(scan.bytesScanned).toBeGreaterThan(64 * MB);
    expect(scan.found).toEqual(present.map((p) => p.needle.name).sort());
  } finally {
    child.kill('SIGKILL');
    await exited(child);
  }
  await expect(scanProcessMemory(process.pid, [{ name: 'zeros', bytes: Buffer.alloc(64) }])).rejects.toThrow(/not all zero/);
});
