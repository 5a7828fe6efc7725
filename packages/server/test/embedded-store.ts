/**
 * What the round engine's unit tests run on: an embedded database (PGlite, migrated), the store
 * on it and a blob store, in a fresh temporary directory. Open it in a file's `beforeAll` and close
 * it in its `afterAll`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBlobStore, type BlobStore } from '../src/blobs/blob-store.js';
import { createLogger } from '../src/logger.js';
import { openDatabase, type Database } from '../src/persistence/database.js';
import { createPrismaStore } from '../src/persistence/prisma-store.js';
import type { FederationStore } from '../src/rounds/ports.js';

export interface EmbeddedStore {
  /** The temporary directory: the database's files and the blob store (`blobs/`). */
  readonly dir: string;
  readonly db: Database;
  readonly store: FederationStore;
  readonly blobs: BlobStore;
}

/** `prefix`: the temporary directory's name prefix. */
export async function openEmbeddedStore(prefix: string): Promise<EmbeddedStore> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const db = await openDatabase({ databaseUrl: undefined, dataDir: dir, logger: createLogger({ level: 'silent' }) });
  await db.migrate();
  return { dir, db, store: createPrismaStore(db.prisma), blobs: createBlobStore({ dir: join(dir, 'blobs') }) };
}

/** Closes the blob store and the database and removes the directory (nothing when it was never opened). */
export async function closeEmbeddedStore(opened: EmbeddedStore | undefined): Promise<void> {
  if (opened === undefined) return;
  await opened.blobs.close();
  await opened.db.close();
  await rm(opened.dir, { recursive: true, force: true });
}
