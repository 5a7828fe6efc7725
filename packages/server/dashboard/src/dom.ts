/** DOM helpers: elements are built with textContent only (names and reasons come from devices and operators). */

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === 'function') el.addEventListener(name.slice(2).toLowerCase(), value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === 'number' ? String(child) : child);
  }
}

export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

export const fmt = {
  eps: (x: number | null | undefined): string => (x === null || x === undefined ? '–' : x.toFixed(x < 10 ? 3 : 2)),
  int: (x: number | null | undefined): string => (x === null || x === undefined ? '–' : x.toLocaleString('en-US')),
  pct: (x: number | null | undefined): string => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(1)}%`),
  bytes: (x: number | null | undefined): string => {
    if (x === null || x === undefined) return '–';
    if (x < 1024) return `${x} B`;
    if (x < 1024 * 1024) return `${(x / 1024).toFixed(1)} KiB`;
    return `${(x / 1024 / 1024).toFixed(2)} MiB`;
  },
  time: (iso: string | null | undefined): string => (iso ? new Date(iso).toLocaleString('en-GB', { hour12: false }) : '–'),
  ago: (iso: string | null | undefined): string => {
    if (!iso) return '–';
    const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  },
};

export function badge(text: string): HTMLElement {
  return h('span', { class: `badge ${text}` }, text);
}

/** ε spent against the cap. */
export function budgetBar(spent: number, cap: number): HTMLElement {
  const share = Math.min(1, cap > 0 ? spent / cap : 0);
  const bar = h('div', { class: share >= 1 ? 'bar full' : 'bar', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': cap, 'aria-valuenow': spent, title: `ε ${fmt.eps(spent)} of ${fmt.eps(cap)}` });
  const fill = h('i');
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  bar.append(fill);
  return bar;
}

export function help(title: string, ...paragraphs: Child[]): HTMLElement {
  return h('details', { class: 'help' }, h('summary', {}, title), ...paragraphs);
}
