/** Session (token in this tab's sessionStorage only), API calls with the bearer header, and a fetch-based SSE reader. */

export type Role = 'admin' | 'audit';
export interface Session {
  token: string;
  role: Role;
}

const KEY = 'veil.session';

export function currentSession(): Session | null {
  const raw = sessionStorage.getItem(KEY);
  if (raw === null) return null;
  try {
    return JSON.parse(raw) as Session;
  } catch {
    return null;
  }
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

async function call<T>(token: string, path: string, init: RequestInit = {}): Promise<T> {
  const response = await fetch(path, { ...init, headers: { ...(init.headers ?? {}), authorization: `Bearer ${token}`, accept: 'application/json' } });
  const body = (await response.json().catch(() => null)) as { code?: string; message?: string } | null;
  if (!response.ok) throw new ApiError(response.status, body?.code ?? 'error', body?.message ?? response.statusText);
  return body as T;
}

/** Checks the token with the API (GET /v1/session) and keeps it for this tab. */
export async function signIn(token: string): Promise<Session> {
  const { role } = await call<{ role: Role }>(token, '/v1/session');
  const session = { token, role };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  return session;
}

export function signOut(): void {
  sessionStorage.removeItem(KEY);
}

export function api<T>(path: string, init?: RequestInit): Promise<T> {
  const s = currentSession();
  if (s === null) return Promise.reject(new ApiError(401, 'unauthenticated', 'not signed in'));
  return call<T>(s.token, path, init);
}

/** GET returning a Blob (for downloads through the authenticated API). */
export async function apiBlob(path: string): Promise<{ blob: Blob; filename: string | null }> {
  const s = currentSession();
  if (s === null) throw new ApiError(401, 'unauthenticated', 'not signed in');
  const response = await fetch(path, { headers: { authorization: `Bearer ${s.token}` } });
  if (!response.ok) throw new ApiError(response.status, 'error', response.statusText);
  const disposition = response.headers.get('content-disposition') ?? '';
  return { blob: await response.blob(), filename: /filename="([^"]+)"/.exec(disposition)?.[1] ?? null };
}

/**
 * Reads a text/event-stream with fetch, so the token travels in the
 * Authorization header (EventSource cannot set headers and would need it in
 * the URL). Reconnects after a drop until `signal` aborts.
 */
export function streamEvents(path: string, onEvent: (type: string, data: unknown) => void, signal: AbortSignal, onState?: (connected: boolean) => void): void {
  const run = async (attempt: number): Promise<void> => {
    const s = currentSession();
    if (s === null || signal.aborted) return;
    try {
      const response = await fetch(path, { headers: { authorization: `Bearer ${s.token}`, accept: 'text/event-stream' }, signal });
      if (!response.ok || response.body === null) throw new ApiError(response.status, 'error', response.statusText);
      onState?.(true);
      attempt = 0;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = 'message';
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) type = line.slice(7);
            else if (line.startsWith('data: ')) data.push(line.slice(6));
          }
          if (data.length > 0) onEvent(type, JSON.parse(data.join('\n')));
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && (error.status === 401 || error.status === 403 || error.status === 404)) {
        onState?.(false);
        return;
      }
    }
    onState?.(false);
    if (!signal.aborted) setTimeout(() => void run(attempt + 1), Math.min(10_000, 500 * 2 ** attempt));
  };
  void run(0);
}
