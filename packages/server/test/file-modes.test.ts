/**
 * Files (issue 12, item 7): the data directory is 0700 and nothing the coordinator writes there
 * (embedded PGlite database, blobs, secrets, lock) is readable or writable by group or others,
 * even when the process starts with umask 022 and the directory already exists as 0755.
 */
import { chmod, mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { createTestStorage, createTinyTask, joinDevice, pattern, TINY_PARAMETERS, startTestCoordinator } from './helpers.js';

const previousUmask = process.umask(0o022);
afterAll(() => {
  process.umask(previousUmask);
});

async function modes(dir: string): Promise<Array<{ path: string; mode: number }>> {
  const out = [{ path: dir, mode: (await stat(dir)).mode & 0o777 }];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = join(entry.parentPath, entry.name);
    out.push({ path, mode: (await stat(path)).mode & 0o777 });
  }
  return out;
}

test('the data directory is 0700 and no file in it is open to group or others (PGlite, blobs, secrets)', async () => {
  await using storage = await createTestStorage('pglite');
  // An existing, world-readable directory and a file in it, as an older version (umask 022) left them.
  await chmod(storage.dataDir, 0o755);
  await mkdir(join(storage.dataDir, 'blobs'), { mode: 0o755 });
  await using env = await startTestCoordinator({ storage });
  const { id } = await createTinyTask(env.rest, { clientsPerRound: 1, minClients: 1, minAvailableClients: 1 });
  using device = await joinDevice(env.coordinator, id, 'd');
  const assignment = await device.nextAssignment();
  await device.submit(assignment, pattern(TINY_PARAMETERS, 3), 5);
  await env.close();

  const all = await modes(storage.dataDir);
  expect(all.length).toBeGreaterThan(20); // the database's files, blobs, secrets
  expect(all[0]!.mode).toBe(0o700);
  const open = all.filter((e) => (e.mode & 0o077) !== 0).map((e) => `${e.path} ${e.mode.toString(8)}`);
  expect(open).toEqual([]);
  expect(all.some((e) => e.path.includes('pgdata'))).toBe(true);
  expect(all.filter((e) => e.path.includes('blobs')).length).toBeGreaterThan(2);
}, 180_000);
