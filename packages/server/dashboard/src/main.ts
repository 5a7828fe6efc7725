/**
 * The Veil operator dashboard: a hash router over four views. Signed in with
 * the admin token (everything) or the audit token (task list and privacy
 * views; the API refuses the rest whatever the page does).
 */
import { ApiError, currentSession, signIn, signOut } from './api.js';
import { h, replace } from './dom.js';
import { devicesView, privacyView, taskView, tasksView, type View } from './views.js';

const main = document.getElementById('main')!;
const nav = document.getElementById('nav')!;
const who = document.getElementById('who')!;
let active: View | null = null;

function signInForm(message?: string): void {
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', required: true, 'aria-label': 'Token' });
  const error = h('p', { class: 'error', id: 'signin-error', role: 'alert' }, message ?? '');
  // method=post and no action: even without this script the token would not end up in a URL.
  const form = h(
    'form',
    { class: 'signin card', method: 'post' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Paste the admin token (VEIL_ADMIN_TOKEN) or the read-only audit token (VEIL_AUDIT_TOKEN). It stays in this tab only (session storage) and is sent in the Authorization header, never in a URL.'),
    h('label', { for: 'token' }, 'Token'),
    input,
    h('button', { class: 'primary', type: 'submit' }, 'Sign in'),
    error,
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    signIn(input.value.trim()).then(
      () => {
        input.value = '';
        if (location.hash === '' || location.hash === '#/signin') location.hash = '#/tasks';
        else void render();
      },
      (e: unknown) => {
        error.textContent = e instanceof ApiError && (e.status === 401 || e.status === 403) ? 'That token is not valid here.' : `Sign-in failed: ${String((e as Error).message)}`;
      },
    );
  });
  replace(nav);
  replace(who);
  replace(main, form);
  input.focus();
}

async function render(): Promise<void> {
  active?.dispose();
  active = null;
  const session = currentSession();
  if (session === null) return signInForm();
  replace(
    who,
    h('span', { id: 'role', 'data-role': session.role }, session.role === 'admin' ? 'Operator (admin token)' : 'Privacy auditor (audit token, read-only)'),
    ' ',
    h('button', { id: 'signout', onclick: () => { signOut(); location.hash = '#/signin'; void render(); } }, 'Sign out'),
  );
  const path = location.hash.replace(/^#/, '') || '/tasks';
  const m = /^\/tasks\/([0-9a-f-]{36})(?:\/(privacy|devices))?$/.exec(path);
  const links: Array<[string, string]> = [['#/tasks', 'Tasks']];
  if (m) {
    if (session.role === 'admin') links.push([`#/tasks/${m[1]}`, 'Task'], [`#/tasks/${m[1]}/devices`, 'Devices']);
    links.push([`#/tasks/${m[1]}/privacy`, 'Privacy']);
  }
  replace(nav, ...links.map(([href, text]) => h('a', { href, class: href === location.hash ? 'active' : null }, text)));
  try {
    if (!m) active = tasksView(main, session.role);
    else if (m[2] === 'privacy') active = privacyView(main, m[1]!);
    else if (session.role !== 'admin') {
      replace(main, h('p', { class: 'error' }, 'The audit token reads the task list and the privacy views only.'));
      return;
    } else if (m[2] === 'devices') active = devicesView(main, m[1]!);
    else active = taskView(main, m[1]!);
    await active.ready;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      signOut();
      return signInForm('The session is no longer valid; sign in again.');
    }
    replace(main, h('p', { class: 'error', role: 'alert' }, e instanceof ApiError ? `${e.status} ${e.code}: ${e.message}` : String(e)));
  }
}

window.addEventListener('hashchange', () => void render());
void render();
