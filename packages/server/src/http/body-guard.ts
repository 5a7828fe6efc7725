import type { FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import { VeilError } from '../errors.js';

export interface BodyGuardOptions {
  /** Deepest nesting of arrays and objects a JSON body may have. Default 64 (a TF.js topology needs about 10). */
  maxDepth?: number;
}

/** In a `u` regex a surrogate pair is one code point (not Cs): only an unpaired surrogate matches. */
const LONE_SURROGATE = /\p{Cs}/u;

/** Whether `text` holds an unpaired surrogate, so has no UTF-8 form (Unicode §3.9 D89). Also the Connect adapter's check of proto3 JSON strings. */
export const hasLoneSurrogate = (text: string): boolean => LONE_SURROGATE.test(text);

/**
 * Refuses, before schema validation, JSON bodies that the database could not store or that would
 * cost deep recursion later: nesting beyond `maxDepth`, any string or key holding U+0000
 * (PostgreSQL's text and jsonb cannot hold it), and any string or key that is not well-formed
 * UTF-16 (a lone surrogate, which JSON's `\ud800` escape can carry: it has no UTF-8 encoding, so
 * neither the database nor Prisma's engine can store it — RFC 8259 §8.2, Unicode §3.9 D89).
 * The walk is iterative: no body can overflow the stack here.
 */
export function checkJsonBody(body: unknown, maxDepth: number): void {
  const stack: Array<{ value: unknown; depth: number }> = [{ value: body, depth: 0 }];
  while (stack.length > 0) {
    const { value, depth } = stack.pop()!;
    if (typeof value === 'string') {
      if (value.includes('\u0000')) throw new VeilError('invalid_argument', 'strings must not contain the NUL character (U+0000)');
      if (hasLoneSurrogate(value)) throw new VeilError('invalid_argument', 'strings must be well-formed Unicode (no lone surrogate)');
      continue;
    }
    if (value === null || typeof value !== 'object') continue;
    if (depth >= maxDepth) throw new VeilError('invalid_argument', `the body is nested deeper than ${maxDepth} levels`);
    if (Array.isArray(value)) {
      for (const item of value) stack.push({ value: item, depth: depth + 1 });
    } else {
      for (const [key, item] of Object.entries(value)) {
        if (key.includes('\u0000')) throw new VeilError('invalid_argument', 'keys must not contain the NUL character (U+0000)');
        if (hasLoneSurrogate(key)) throw new VeilError('invalid_argument', 'keys must be well-formed Unicode (no lone surrogate)');
        stack.push({ value: item, depth: depth + 1 });
      }
    }
  }
}

const bodyGuard: FastifyPluginAsync<BodyGuardOptions> = async (app, options) => {
  const maxDepth = options.maxDepth ?? 64;
  app.addHook('preValidation', async (request) => {
    if (request.body !== undefined) checkJsonBody(request.body, maxDepth);
  });
  // Ajv's "integer" accepts Infinity (coerced from the text "Infinity" or "1e400"), and its
  // "maximum" lets it through too: no query value may be a non-finite number.
  app.addHook('preHandler', async (request) => {
    for (const [name, value] of Object.entries((request.query ?? {}) as Record<string, unknown>)) {
      if (typeof value === 'number' && !Number.isFinite(value)) throw new VeilError('invalid_argument', `querystring/${name.slice(0, 40)} must be a finite number`);
    }
  });
};

/** The body guard on every route (root-level plugin). */
export const bodyGuardPlugin = fp(bodyGuard, { name: 'veil-body-guard', fastify: '5.x' });
