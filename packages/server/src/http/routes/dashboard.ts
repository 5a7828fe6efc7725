import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';

export interface DashboardRoutesOptions {
  /** Directory of the built dashboard (scripts/build-dashboard.mjs). Default: dist/dashboard of this package. */
  dir?: string;
}

/** The built dashboard: dist/dashboard next to dist/http (built code), or the package's dist/ when run from src/ (tests). */
export function defaultDashboardDir(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const candidates = [join(here, '..', '..', 'dashboard'), join(here, '..', '..', '..', 'dist', 'dashboard')];
  return candidates.find((dir) => existsSync(join(dir, 'manifest.json'))) ?? candidates[0]!;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

// The page loads only its own files and talks only to this origin; the token is never in a URL.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

interface Asset {
  type: string;
  identity: Buffer;
  gzip: Buffer;
  brotli: Buffer;
  immutable: boolean;
}

/**
 * Serves the operator dashboard at /dashboard/ (public: static files hold no
 * data; every figure comes from the API with the token the user types).
 * Precompressed brotli or gzip as the browser accepts; content-hashed assets
 * cached for a year, index.html revalidated on every load.
 */
export const dashboardRoutes: FastifyPluginAsync<DashboardRoutesOptions> = async (app, options) => {
  const dir = options.dir ?? defaultDashboardDir();
  const assets = new Map<string, Asset>();
  let manifest: Record<string, unknown> = {};
  try {
    manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  } catch {
    app.log.warn({ dir }, 'dashboard not built (npm run gen builds it); /dashboard answers 404');
  }
  for (const name of Object.keys(manifest)) {
    const ext = name.slice(name.lastIndexOf('.'));
    const type = TYPES[ext];
    if (type === undefined) continue;
    const [identity, gzip, brotli] = await Promise.all([readFile(join(dir, name)), readFile(join(dir, `${name}.gz`)), readFile(join(dir, `${name}.br`))]);
    assets.set(name, { type, identity, gzip, brotli, immutable: name !== 'index.html' });
  }

  const send = (request: FastifyRequest, reply: FastifyReply, asset: Asset) => {
    const accept = String(request.headers['accept-encoding'] ?? '');
    const [body, encoding] = /\bbr\b/.test(accept) ? [asset.brotli, 'br'] : /\bgzip\b/.test(accept) ? [asset.gzip, 'gzip'] : [asset.identity, null];
    if (encoding !== null) void reply.header('content-encoding', encoding);
    return reply
      .header('content-type', asset.type)
      .header('vary', 'accept-encoding')
      .header('cache-control', asset.immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .send(body);
  };
  const hidden = { hide: true } as const;

  app.get('/dashboard', { config: { auth: 'public' }, schema: hidden }, async (_request, reply) => reply.redirect('/dashboard/', 301));
  app.get('/dashboard/', { config: { auth: 'public' }, schema: hidden }, async (request, reply) => {
    const index = assets.get('index.html');
    if (index === undefined) return reply.status(404).send({ code: 'not_found', message: 'the dashboard is not built' });
    return send(request, reply, index);
  });
  app.get<{ Params: { file: string } }>('/dashboard/:file', { config: { auth: 'public' }, schema: hidden }, async (request, reply) => {
    // Only the built files, by exact name: no path is ever joined from the request.
    const asset = assets.get(request.params.file);
    if (asset === undefined) return reply.status(404).send({ code: 'not_found', message: 'no such dashboard file' });
    return send(request, reply, asset);
  });
};
