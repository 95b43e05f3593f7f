// The console's shell: session (token in sessionStorage, sent in Authorization only), the API helper, DOM
// building without innerHTML, the hash router and the live event stream. Screens live in screens.js.
import { screens } from './screens.js';

// Errors and CSP violations are kept where a test (or a curious operator) can read them.
window.__consoleErrors = [];
window.addEventListener('error', (e) => window.__consoleErrors.push(`error: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => window.__consoleErrors.push(`rejection: ${e.reason}`));
document.addEventListener('securitypolicyviolation', (e) =>
  window.__consoleErrors.push(`csp: ${e.violatedDirective} ${e.blockedURI}`));

export const session = {
  get token() { return sessionStorage.getItem('token'); },
  set token(value) { value ? sessionStorage.setItem('token', value) : sessionStorage.removeItem('token'); },
  get username() { return sessionStorage.getItem('username') || ''; },
  set username(value) { sessionStorage.setItem('username', value); },
  me: null,
};

/** Replaces the children of `node`, leaving out the null and false a conditional child may be. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

/** An element: `el('td', {class: 'x'}, 'text', child)`; text is always text, never markup. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'href') node.setAttribute('href', safeHref(value));
    else if (value === true) node.setAttribute(name, '');
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Only our own routes, http and https links: a `javascript:` URL from data never becomes a link. */
function safeHref(value) {
  const text = String(value);
  if (text.startsWith('#')) return text;
  try {
    const url = new URL(text, location.href);
    return ['http:', 'https:'].includes(url.protocol) ? url.href : '#';
  } catch { return '#'; }
}

export class ApiError extends Error {
  constructor(status, body, headers) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.headers = headers;
    this.id = body?.error?.id;
  }
}

/** JSON call to the leader; the answer's JSON and headers, or an ApiError. 401 goes back to the login. */
export async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (session.token) init.headers.authorization = session.token;
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!response.ok) {
    if (response.status === 401 && path !== '/auth/login') {
      session.token = null;
      go('#/login');
    }
    throw new ApiError(response.status, json, response.headers);
  }
  return { body: json, headers: response.headers };
}

export function toast(message) {
  const item = el('div', {}, message);
  document.getElementById('toast').append(item);
  setTimeout(() => item.remove(), 6000);
}

export function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

/** Whether the logged-in user holds `group:name` (admin-key callers hold everything). */
export function may(group, name) {
  const permissions = session.me?.permissions;
  if (!permissions) return false;
  return (permissions[group] || []).includes(name);
}

// Live updates: `GET /admin/events` read with fetch (EventSource cannot send Authorization).
const listeners = new Set();
let stream = null;

export function onEvent(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

async function openStream() {
  if (stream || !session.token) return;
  const controller = new AbortController();
  stream = controller;
  const live = document.getElementById('live');
  try {
    const response = await fetch('/admin/events', {
      headers: { authorization: session.token, accept: 'text/event-stream' },
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(`events: HTTP ${response.status}`);
    live.textContent = 'live';
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let type = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) type = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
        }
        if (data.length === 0) continue;
        const payload = JSON.parse(data.join('\n'));
        for (const listener of listeners) listener(type, payload);
      }
    }
  } catch (err) {
    if (err.name === 'AbortError') return;
  } finally {
    if (stream === controller) stream = null;
    live.textContent = session.token ? 'reconnecting…' : '';
  }
  if (session.token) setTimeout(openStream, 2000);
}

export function closeStream() {
  if (stream) stream.abort();
  stream = null;
}

let leave = null;

async function route() {
  const [path, ...rest] = (location.hash.slice(1) || '/overview').split('/').filter(Boolean);
  const view = document.getElementById('view');
  if (leave) { leave(); leave = null; }
  const nav = document.getElementById('nav');
  if (!session.token && path !== 'login') { go('#/login'); return; }
  nav.hidden = !session.token;
  for (const link of nav.querySelectorAll('a')) {
    if (link.getAttribute('href') === `#/${path}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (session.token && !session.me) {
    try { session.me = (await api('GET', '/auth/me')).body; } catch { return; }
  }
  if (session.token) openStream();
  const screen = screens[path] || screens.overview;
  delete view.dataset.screen;
  fill(view, el('p', { class: 'muted' }, 'Loading…'));
  try {
    const content = await screen.render(rest);
    fill(view, content.node || content);
    leave = content.leave || null;
    view.dataset.screen = screens[path] ? path : 'overview';
  } catch (err) {
    fill(view, el('h1', {}, path), el('p', { class: 'error', role: 'alert' }, err.message));
    view.dataset.screen = screens[path] ? path : 'overview';
  }
}

window.addEventListener('hashchange', route);
route();
