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
  const maps = (await readFile(`/proc/${pid}/maps`, 'utf8')).trim().split('\n');
  const mem = await open(`/proc/${pid}/mem`, 'r');
  const found = new Set<string>();
  const overlap = Math.max(...needles.map((n) => n.bytes.length));
  let bytesScanned = 0;
  try {
    for (const line of maps) {
      const [range, perms] = line.split(/\s+/);
      if (!perms?.startsWith('r') || line.includes('[vvar]') || line.includes('[vsyscall]')) continue;
      const [start, end] = range!.split('-').map((h) => Number.parseInt(h, 16)) as [number, number];
      const chunk = 16 * 1024 * 1024;
      for (let at = start; at < end; at += chunk) {
        const length = Math.min(chunk + overlap, end - at);
        const buffer = Buffer.alloc(length);
        let read = 0;
        try {
          ({ bytesRead: read } = await mem.read(buffer, 0, length, at));
        } catch {
          break; // unreadable (reserved but unmapped, e.g. WebAssembly guard pages)
        }
        bytesScanned += read;
        const view = buffer.subarray(0, read);
        for (const n of needles) if (!found.has(n.name) && view.includes(n.bytes)) found.add(n.name);
      }
    }
  } finally {
    await mem.close();
  }
  return { found: [...found].sort(), bytesScanned };
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
