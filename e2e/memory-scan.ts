import { open, readFile } from 'node:fs/promises';

export interface Needle {
  name: string;
  bytes: Buffer;
}

/**
 * Searches every readable mapping of a live process (/proc/<pid>/maps and
 * /proc/<pid>/mem; Linux, same user or root) for byte strings. Used to show a
 * process never held a secret: a needle found anywhere in its heap, stacks or
 * WebAssembly memory would be reported.
 */
export async function scanProcessMemory(pid: number, needles: readonly Needle[]): Promise<{ found: string[]; bytesScanned: number }> {
  // A needle inside one zero page would be all zeros: such needles prove nothing, and longer ones could span a skipped page.
  if (needles.some((n) => n.bytes.length >= PAGE || !n.bytes.some((b) => b !== 0))) throw new Error(`needles must be 1 to ${PAGE - 1} bytes, not all zero`);
  const maps = (await readFile(`/proc/${pid}/maps`, 'utf8')).trim().split('\n');
  const mem = await open(`/proc/${pid}/mem`, 'r');
  const found = new Set<string>();
  const overlap = Math.max(...needles.map((n) => n.bytes.length));
  const index = indexNeedles(needles);
  // One buffer for every read (only the bytes read are searched).
  const buffer = Buffer.allocUnsafe(CHUNK + overlap);
  let bytesScanned = 0;
  try {
    for (const line of maps) {
      const [range, perms] = line.split(/\s+/);
      if (!perms?.startsWith('r') || line.includes('[vvar]') || line.includes('[vsyscall]')) continue;
      const [start, end] = range!.split('-').map((h) => Number.parseInt(h, 16)) as [number, number];
      for (let at = start; at < end; at += CHUNK) {
        const length = Math.min(CHUNK + overlap, end - at);
        let read = 0;
        try {
          ({ bytesRead: read } = await mem.read(buffer, 0, length, at));
        } catch {
          break; // unreadable (reserved but unmapped, e.g. WebAssembly guard pages)
        }
        bytesScanned += read;
        for (const view of nonZeroSpans(buffer.subarray(0, read), overlap)) index.search(view, found);
      }
    }
  } finally {
    await mem.close();
  }
  return { found: [...found].sort(), bytesScanned };
}

/** Needles this long or longer are found through 8-byte anchors (see {@link indexNeedles}); shorter ones by Buffer.includes. */
const ANCHORED_MIN = 16 + 8 - 1;

const anchorKey = (b: Buffer, at: number): number => Math.imul(b.readUInt32LE(at), 0x9e3779b1) ^ b.readUInt32LE(at + 4);

/**
 * One pass for many needles: each needle of L >= 23 bytes is indexed by 16 of its 8-byte
 * windows, one at an offset of each residue mod 16 (the one with the fewest zero bytes), so any
 * occurrence starting at s has an indexed window at a position p = s + offset with p ≡ 0 mod 16.
 * The search hashes the 8 bytes at every 16th position of the haystack and compares the whole
 * needle at each hit: about one hash-table lookup per 16 bytes, whatever the number of needles
 * (Buffer.includes per needle took over a minute for 145 needles over 845 MB).
 */
function indexNeedles(needles: readonly Needle[]): { search(view: Buffer, found: Set<string>): void } {
  const table = new Map<number, Array<{ needle: Needle; offset: number }>>();
  const short: Needle[] = [];
  for (const needle of needles) {
    const bytes = needle.bytes;
    if (bytes.length < ANCHORED_MIN) {
      short.push(needle);
      continue;
    }
    for (let residue = 0; residue < 16; residue++) {
      let best = residue;
      let bestZeros = 9;
      for (let offset = residue; offset + 8 <= bytes.length; offset += 16) {
        let zeros = 0;
        for (let i = offset; i < offset + 8; i++) if (bytes[i] === 0) zeros++;
        if (zeros < bestZeros) [best, bestZeros] = [offset, zeros];
      }
      const key = anchorKey(bytes, best);
      const list = table.get(key) ?? [];
      list.push({ needle, offset: best });
      table.set(key, list);
    }
  }
  return {
    search(view, found) {
      for (let p = 0; p + 8 <= view.length; p += 16) {
        const anchors = table.get(anchorKey(view, p));
        if (anchors === undefined) continue;
        for (const { needle, offset } of anchors) {
          const start = p - offset;
          const end = start + needle.bytes.length;
          if (start >= 0 && end <= view.length && view.compare(needle.bytes, 0, needle.bytes.length, start, end) === 0) found.add(needle.name);
        }
      }
      for (const needle of short) if (!found.has(needle.name) && view.includes(needle.bytes)) found.add(needle.name);
    },
  };
}

const PAGE = 4096;
const CHUNK = 16 * 1024 * 1024;
const ZERO_PAGE = Buffer.alloc(PAGE);

/**
 * The parts of `buffer` that are not whole zero pages, each widened by `margin` bytes on both
 * sides (so a needle that ends or starts in a zero page is still seen whole). A process's mappings
 * are mostly untouched zero pages (reserved heap, WebAssembly memory); a needle with zero bytes in
 * it makes the byte search crawl through them, and a needle shorter than a page cannot lie inside one.
 */
function nonZeroSpans(buffer: Buffer, margin: number): Buffer[] {
  const spans: Buffer[] = [];
  let start = -1;
  for (let at = 0; at < buffer.length; at += PAGE) {
    const end = Math.min(at + PAGE, buffer.length);
    const zero = end - at === PAGE && buffer.compare(ZERO_PAGE, 0, PAGE, at, end) === 0;
    if (!zero && start < 0) start = at;
    if (zero && start >= 0) {
      spans.push(buffer.subarray(Math.max(0, start - margin), Math.min(buffer.length, at + margin)));
      start = -1;
    }
  }
  if (start >= 0) spans.push(buffer.subarray(Math.max(0, start - margin), buffer.length));
  return spans;
}

/**
 * Byte strings that a process that read the secret key would contain: its
 * base64 text (the device-key.json form) and its serialized bytes (what a
 * loader decodes that text into before handing it to SEAL).
 */
export function secretKeyNeedles(serialized: Uint8Array, deviceKeyFileText: string): Needle[] {
  const base64 = Buffer.from(serialized).toString('base64');
  const mid = Math.floor(base64.length / 2);
  const compressed = Buffer.from(serialized);
  const needles: Needle[] = [
    { name: 'secret key (base64, as in device-key.json)', bytes: Buffer.from(base64.slice(mid, mid + 64)) },
    { name: 'secret key (serialized bytes)', bytes: compressed.subarray(Math.floor(compressed.length / 2), Math.floor(compressed.length / 2) + 48) },
  ];
  if (!deviceKeyFileText.includes(base64.slice(mid, mid + 64))) throw new Error('the device key file does not hold the expected secret key');
  return needles;
}
