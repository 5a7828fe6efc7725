import { errorSchema } from '../schemas.js';

/** OpenAPI security requirement of the bearer-token routes. */
export const secured = { security: [{ bearer: [] }] };
export const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', format: 'uuid' } } } as const;
/** Error responses every secured route may give. */
export const errorResponses = { 400: errorSchema, 401: errorSchema, 403: errorSchema, 404: errorSchema, 409: errorSchema } as const;
export const pageQuery = (maxLimit: number) =>
  ({
    type: 'object',
    properties: { offset: { type: 'integer', minimum: 0, default: 0 }, limit: { type: 'integer', minimum: 1, maximum: maxLimit, default: 100 } },
  }) as const;
