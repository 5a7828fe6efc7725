import { errorSchema } from '../schemas.js';

/** OpenAPI security requirement of the bearer-token routes. */
export const secured = { security: [{ bearer: [] }] };
export const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', format: 'uuid' } } } as const;
/** A response schema with its OpenAPI description. */
export const described = <S extends object>(schema: S, description: string) => ({ ...schema, description }) as S & { description: string };
/** Error responses every secured route may give; the body is `{ code, message }`. */
export const errorResponses = {
  400: described(errorSchema, 'invalid_argument: the parameters or the body are invalid (the message says which)'),
  401: described(errorSchema, 'unauthenticated: no bearer token'),
  403: described(errorSchema, 'permission_denied: a wrong token, or the audit token on an admin route'),
  404: described(errorSchema, 'not_found: no such task (or model version)'),
  409: described(errorSchema, 'failed_precondition: not possible in the task\'s current state'),
} as const;
/** The rate-limit refusal (Retry-After header). */
export const rateLimitedResponse = described(errorSchema, 'rate_limited: too many failed attempts; retry after the Retry-After header');
/** Largest integer a query value may hold (the database's int4): larger ones are a 400, not a 500. */
export const MAX_INT32 = 2_147_483_647;
export const pageQuery = (maxLimit: number) =>
  ({
    type: 'object',
    properties: { offset: { type: 'integer', minimum: 0, maximum: MAX_INT32, default: 0 }, limit: { type: 'integer', minimum: 1, maximum: maxLimit, default: 100 } },
  }) as const;
