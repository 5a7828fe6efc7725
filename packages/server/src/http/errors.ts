import type { VeilErrorCode } from '../errors.js';

/** Each coordinator error code as an HTTP status: the one table. */
export const HTTP_STATUS: Readonly<Record<VeilErrorCode, number>> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  already_exists: 409,
  already_accepted: 409,
  failed_precondition: 409,
  resource_exhausted: 413,
  rate_limited: 429,
  deadline_exceeded: 504,
  aborted: 409,
  unavailable: 503,
  internal: 500,
};
