// The console's screens: each `render(args)` returns a node (or `{node, leave}`) built from the JSON API.
import { api, el, fill, session, go, toast, may, onEvent, closeStream, ApiError } from './app.js';
import { settingsScreen } from './settings.js';
import { rolloutsScreen, rolloutScreen } from './rollouts.js';
import { zonesScreen } from './zones.js';

export const ago = (at) => {
  if (!at) return 'never';
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - at));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
};
export const time = (at) => (at ? new Date(at * 1000).toLocaleString() : '—');
export const short = (revision) => (revision ? String(revision).slice(0, 8) : '—');
const SILENT_AFTER = 600;

/** up to date, behind, reverted or silent: what the overview counts. */
export function followerState(f) {
  if (!f.lastFetch || Date.now() / 1000 - f.lastFetch > SILENT_AFTER) return 'silent';
  if (f.lastReport?.outcome === 'reverted') return 'reverted';
  return f.upToDate ? 'up to date' : 'behind';
}

const badgeClass = { 'up to date': 'good', healthy: 'good', applied: 'good', unchanged: 'good', done: 'good',
  behind: 'warn', silent: 'warn', running: 'warn', pending: 'warn', notified: 'warn', stopped: 'bad',
  reverted: 'bad', incomplete: 'bad', skipped: 'bad', unreachable: 'bad', 'timed-out': 'bad', aborted: 'bad' };
export const badge = (text) => el('span', { class: `badge ${badgeClass[text] || ''}` }, text);

function table(headers, rows) {
  return el('div', { class: 'scroll' }, el('table', {},
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows)));
}

export function field(label, input) {
  const id = `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return el('div', {}, el('label', { for: id }, label), input);
}

/** A unified diff as lines coloured by their sign (text nodes only). */
export function diffBlock(text) {
  return el('pre', { class: 'diff' }, text.split('\n').map((line) =>
    el('span', { class: line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : '' }, `${line}\n`)));
}

/** A preview (`{roles: [{role, variant, files, restarts, followers}]}`) as sections per role or variant. */
export function previewView(preview) {
  const changed = preview.roles.filter((r) => r.files.length > 0);
  if (changed.length === 0) return el('p', { class: 'muted' }, 'No file changes on any machine.');
  return el('div', { class: 'preview' }, changed.map((role) => el('section', { 'data-role': role.variant || role.role },
    el('h3', {}, `${role.variant || role.role}: ${role.files.length} file(s)`),
    el('p', {}, 'Restarts: ', role.restarts.length ? role.restarts.join(', ') : 'none'),
    role.followers.length ? el('ul', {}, role.followers.map((f) =>
      el('li', {}, `${f.name || f.url}: ${f.restarts.length ? f.restarts.join(', ') : 'no restart'}`))) : null,
    role.files.map((file) => el('div', {},
      el('p', {}, el('strong', {}, file.change), ' ', file.path),
      file.diff ? diffBlock(file.diff) : el('p', { class: 'muted' }, 'binary file'))))));
}

function loginScreen() {
  const username = el('input', { name: 'username', autocomplete: 'username', required: true });
  const password = el('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const submit = el('button', { type: 'submit' }, 'Log in');
  const message = el('p', { class: 'error', role: 'alert' });
  const countdown = (seconds) => {
    submit.disabled = true;
    const tick = () => {
      if (seconds <= 0) { submit.disabled = false; message.textContent = ''; return; }
      message.textContent = `Too many attempts: try again in ${seconds} s.`;
      seconds -= 1;
      setTimeout(tick, 1000);
    };
    tick();
  };
  const form = el('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = '';
      try {
        const { body } = await api('POST', '/auth/login', { username: username.value, password: password.value });
        session.token = body.token;
        session.username = username.value;
        session.me = null;
        go('#/overview');
      } catch (err) {
        if (err.status === 429) countdown(Number(err.headers.get('retry-after')) || 10);
        else message.textContent = err.message;
      }
    },
  }, el('h1', {}, 'Log in'), field('Username', username), field('Password', password), submit, message);
  return el('section', { class: 'login' }, form);
}

function accountScreen() {
  const old = el('input', { type: 'password', autocomplete: 'current-password' });
  const next = el('input', { type: 'password', autocomplete: 'new-password' });
  const check = el('input', { type: 'password', autocomplete: 'new-password' });
  const message = el('p', { role: 'alert' });
  const logout = el('button', {
    class: 'secondary', type: 'button',
    onclick: async () => {
      try { await api('POST', '/auth/logout'); } catch { /* the token is dropped anyway */ }
      session.token = null; session.me = null; closeStream(); go('#/login');
    },
  }, 'Log out');
  return el('div', {}, el('h1', {}, `Account: ${session.me?.username || session.username}`),
    el('section', {}, el('h2', {}, 'Change password'), el('form', {
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await api('POST', `/users/${encodeURIComponent(session.me.username)}/change-password`,
            { oldPassword: old.value, newPassword: next.value, newPasswordCheck: check.value });
          toast('Password changed: log in again.');
          session.token = null; session.me = null; closeStream(); go('#/login');
        } catch (err) { message.className = 'error'; message.textContent = err.message; }
      },
    }, field('Current password', old), field('New password', next), field('New password again', check),
    el('button', { type: 'submit' }, 'Change password'), message)), logout);
}

async function overviewScreen() {
  const node = el('div', {}, el('h1', {}, 'Overview'));
  const body = el('div');
  node.append(body);
  const draw = async (status) => {
    const [rollouts, history, audit] = await Promise.all([
      api('GET', '/admin/rollouts').then((r) => r.body.rollouts),
      api('GET', '/admin/settings/history').then((r) => r.body.revisions.slice(0, 5)),
      api('GET', '/admin/audit?limit=5').then((r) => r.body.entries),
    ]);
    status = status || (await api('GET', '/admin/status')).body;
    const groups = new Map();
    for (const f of status.followers) {
      const key = f.zone ? `${f.role} @ ${f.zone}` : f.role;
      const counts = groups.get(key) || { 'up to date': 0, behind: 0, reverted: 0, silent: 0 };
      counts[followerState(f)] += 1;
      groups.set(key, counts);
    }
    const active = rollouts.find((r) => r.state === 'running' || r.state === 'stopped');
    const problems = Object.entries(status.renderProblems || {});
    fill(body, 
      el('div', { class: 'grid' }, [...groups].map(([key, counts]) => el('section', { class: 'card', 'data-group': key },
        el('h2', {}, key),
        el('p', {}, Object.entries(counts).map(([state, n]) => el('span', {}, badge(state), ` ${n} `)))))),
      el('section', {}, el('h2', {}, 'Render problems'), problems.length === 0 ? el('p', { class: 'ok' }, 'Every role renders.')
        : el('ul', {}, problems.map(([variant, p]) => el('li', { class: 'error' },
          `${variant}: ${p.error}${p.serving ? ` (still serving ${short(p.serving)})` : ''}`)))),
      el('section', {}, el('h2', {}, 'Rollout in progress'), active
        ? el('p', {}, el('a', { href: `#/rollout/${active.id}` }, `Rollout ${active.id}`), ' ', badge(active.state),
          ` wave ${active.currentWave + 1} of ${active.waves.length}`)
        : el('p', { class: 'muted' }, 'None.')),
      el('section', {}, el('h2', {}, 'Latest revisions'), table(['Revision', 'Author', 'When', 'Message'],
        history.map((r) => el('tr', {}, el('td', {}, String(r.revision)), el('td', {}, r.author), el('td', {}, time(r.at)), el('td', {}, r.message))))),
      el('section', {}, el('h2', {}, 'Latest audit entries'), table(['When', 'Who', 'What', 'Detail'],
        audit.map((a) => el('tr', {}, el('td', {}, time(a.at)), el('td', {}, a.actor), el('td', {}, a.action), el('td', {}, a.detail || ''))))));
  };
  await draw();
  const leave = onEvent((type, payload) => { if (type === 'fleet') draw(payload).catch(() => {}); });
  return { node, leave };
}

async function followersScreen(args) {
  if (args[0]) return followerDetail(decodeURIComponent(args[0]));
  const filter = el('input', { type: 'search', placeholder: 'name, url, role, zone, outcome' });
  const rows = el('tbody');
  let followers = (await api('GET', '/admin/status')).body.followers;
  const draw = () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    fill(rows, ...followers
      .filter((f) => words.every((w) => [f.name, f.url, f.role, f.zone, f.lastReport?.outcome, followerState(f)]
        .some((v) => v && String(v).toLowerCase().includes(w))))
      .map((f) => el('tr', { 'data-follower': f.name || f.url },
        el('td', {}, el('a', { href: `#/followers/${encodeURIComponent(f.name || f.url)}` }, f.name || f.url)),
        el('td', {}, f.url), el('td', {}, f.role), el('td', {}, f.zone || '—'),
        el('td', {}, short(f.revision), f.upToDate ? '' : ` → ${short(f.currentRevision)}`),
        el('td', {}, ago(f.lastFetch)), el('td', {}, f.lastReport ? badge(f.lastReport.outcome) : '—'),
        el('td', {}, badge(followerState(f))))));
  };
  filter.addEventListener('input', draw);
  draw();
  const roles = [...new Set(followers.map((f) => f.role))];
  const role = el('select', {}, roles.map((r) => el('option', { value: r }, r)));
  const node = el('div', {}, el('h1', {}, 'Followers'), field('Filter', filter),
    el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, el('tr', {},
      ['Name', 'URL', 'Role', 'Zone', 'Revision', 'Last fetch', 'Last report', 'State'].map((h) => el('th', { scope: 'col' }, h)))), rows)),
    el('section', {}, el('h2', {}, 'Notify a role'), field('Role', role), el('button', {
      disabled: !may('settings', 'update'),
      onclick: async () => notifyAndSay({ roles: [role.value] }),
    }, 'Notify role')));
  const leave = onEvent((type, payload) => { if (type === 'fleet') { followers = payload.followers; draw(); } });
  return { node, leave };
}

async function notifyAndSay(body) {
  try {
    const { body: answer } = await api('POST', '/admin/notify', body);
    toast(`${answer.successes.length} notified, ${answer.failures.length} failed, ${(answer.upToDate || []).length} up to date`);
  } catch (err) { toast(err.message); }
}

async function followerDetail(name) {
  const status = (await api('GET', '/admin/status')).body;
  const f = status.followers.find((x) => (x.name || x.url) === name);
  if (!f) return el('p', { class: 'error' }, `No follower ${name}.`);
  const report = f.lastReport;
  const list = (title, items) => el('div', {}, el('h3', {}, title), items && items.length
    ? el('ul', {}, items.map((i) => el('li', {}, typeof i === 'string' ? i : JSON.stringify(i)))) : el('p', { class: 'muted' }, 'none'));
  return el('div', {}, el('h1', {}, `Follower ${name}`),
    el('section', {}, el('p', {}, `${f.url} · role ${f.role}${f.zone ? ` · zone ${f.zone}` : ''} · variant ${f.variant}`),
      el('p', {}, 'Revision ', short(f.revision), ' · current ', short(f.currentRevision), ' · ', badge(followerState(f)),
        ' · last fetch ', ago(f.lastFetch))),
    el('section', { 'data-report': report ? report.outcome : 'none' }, el('h2', {}, 'Last apply'), report ? el('div', {},
      el('p', {}, badge(report.outcome), ` revision ${short(report.revision)} at ${time(report.at)}`,
        ` · apply ${report.applyMs ?? '—'} ms · restart ${report.restartMs ?? '—'} ms · health ${report.healthMs ?? '—'} ms`),
      list('Written', report.written), list('Removed', report.removed), list('Restarted', report.restarted),
      list('Errors', report.errors),
      report.unhealthy ? el('div', {}, el('h3', {}, `Unhealthy: ${report.unhealthy.service} (${report.unhealthy.state})`),
        el('pre', { class: 'diff' }, report.unhealthy.logTail || '')) : null)
      : el('p', { class: 'muted' }, 'No report yet.')),
    el('button', { disabled: !may('settings', 'update'), onclick: () => notifyAndSay({ followers: [name], all: true }) }, 'Notify this follower'),
    el('button', { class: 'secondary', onclick: () => go('#/followers') }, 'Back'));
}

async function historyScreen() {
  const revisions = (await api('GET', '/admin/settings/history')).body.revisions;
  const from = el('select', {}, revisions.map((r) => el('option', { value: r.revision }, `${r.revision}: ${r.message}`)));
  const to = el('select', {}, revisions.map((r) => el('option', { value: r.revision }, `${r.revision}: ${r.message}`)));
  if (revisions.length > 1) from.value = String(revisions[1].revision);
  const result = el('div');
  const compare = el('button', {
    onclick: async () => {
      const { body } = await api('GET', `/admin/settings/diff?from=${from.value}&to=${to.value}`);
      fill(result, body.changes.length === 0 ? el('p', { class: 'muted' }, 'Same settings.')
        : table(['Zone', 'Group', 'Setting', 'Change', 'Before', 'After'], body.changes.map((c) => el('tr', {},
          el('td', {}, c.zone || '—'), el('td', {}, c.group), el('td', {}, c.name), el('td', {}, c.change),
          el('td', {}, JSON.stringify(c.before)), el('td', {}, JSON.stringify(c.after))))));
    },
  }, 'Compare');
  const rollbackArea = el('div');
  const rollback = async (revision) => {
    try {
      const { body } = await api('POST', '/admin/settings/rollback/preview', { revision });
      fill(rollbackArea, el('section', { 'data-rollback': revision }, el('h2', {}, `Roll back to revision ${revision}`),
        previewView(body),
        el('button', {
          class: 'danger',
          onclick: async () => {
            try {
              const { body: saved } = await api('POST', '/admin/settings/rollback', { revision });
              toast(`Rolled back: revision ${saved.revision ?? ''} saved. Notify to apply it.`);
              go('#/history');
            } catch (err) { toast(err.message); }
          },
        }, 'Confirm rollback'),
        el('button', { class: 'secondary', onclick: () => fill(rollbackArea, ) }, 'Cancel')));
      rollbackArea.scrollIntoView();
    } catch (err) { toast(err.message); }
  };
  return el('div', {}, el('h1', {}, 'History'),
    el('section', {}, el('div', { class: 'row' }, field('From', from), field('To', to)), compare, result),
    rollbackArea,
    table(['Revision', 'Author', 'When', 'Message', 'Commit', ''], revisions.map((r) => el('tr', { 'data-revision': r.revision },
      el('td', {}, String(r.revision)), el('td', {}, r.author), el('td', {}, time(r.at)), el('td', {}, r.message),
      el('td', {}, r.commit ? String(r.commit).slice(0, 10) : '—'),
      el('td', {}, el('button', { class: 'secondary', disabled: !may('settings', 'update'), onclick: () => rollback(r.revision) }, 'Roll back…'))))));
}

async function auditScreen() {
  const entries = (await api('GET', '/admin/audit?limit=500')).body.entries;
  return el('div', {}, el('h1', {}, 'Audit log'), table(['When', 'Who', 'Action', 'Detail', 'From'],
    entries.map((a) => el('tr', {}, el('td', {}, time(a.at)), el('td', {}, a.actor),
      el('td', {}, a.action), el('td', {}, a.detail || ''), el('td', {}, a.remote)))));
}

async function migrationsScreen() {
  const plan = (await api('GET', '/admin/migrations')).body;
  const apply = el('button', {
    disabled: plan.migrations.length === 0 || !may('settings', 'update'),
    onclick: async () => {
      try {
        const { body } = await api('POST', '/admin/migrations/apply');
        toast(`Migrated: revision ${body.revision}`);
        go('#/migrations');
      } catch (err) { toast(err.message); }
    },
  }, 'Apply the migration');
  return el('div', {}, el('h1', {}, 'Migrations'),
    el('p', {}, `Platform ${plan.platformVersion} → template ${plan.templateVersion} (${plan.deploymentType})`),
    plan.migrations.length === 0 ? el('p', { class: 'muted' }, 'Nothing to migrate.')
      : el('ol', {}, plan.migrations.map((m) => el('li', {}, `${m.versionsFrom.join(', ')} → ${m.versionTo}`))),
    table(['Zone', 'Group', 'Setting', 'Change', 'Before', 'After'], plan.changes.map((c) => el('tr', {},
      el('td', {}, c.zone || '—'), el('td', {}, c.group), el('td', {}, c.name), el('td', {}, c.change),
      el('td', {}, JSON.stringify(c.before)), el('td', {}, JSON.stringify(c.after))))),
    apply);
}

const PERMISSIONS = { users: ['read', 'create', 'delete', 'resetPassword', 'changePermissions'],
  settings: ['read', 'update'], platformUsers: ['read', 'delete', 'modify'] };

async function usersScreen() {
  const users = may('users', 'read') ? (await api('GET', '/users')).body.users : [];
  const username = el('input', { name: 'new-username', autocomplete: 'off' });
  const password = el('input', { name: 'new-password', type: 'password', autocomplete: 'new-password', placeholder: 'empty: the leader generates one' });
  const boxes = [];
  const grid = el('fieldset', {}, el('legend', {}, 'Permissions'), Object.entries(PERMISSIONS).map(([group, names]) =>
    el('div', {}, el('strong', {}, group), ' ', names.map((name) => {
      const box = el('input', { type: 'checkbox', value: `${group}:${name}`, disabled: !may(group, name) });
      boxes.push(box);
      const id = `p-${group}-${name}`;
      box.id = id;
      return el('span', {}, box, el('label', { for: id, style: undefined }, ` ${name} `));
    }))));
  const created = el('div', { role: 'status' });
  const form = el('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      const permissions = {};
      for (const box of boxes.filter((b) => b.checked)) {
        const [group, name] = box.value.split(':');
        (permissions[group] ||= []).push(name);
      }
      try {
        const body = { username: username.value, permissions };
        if (password.value) body.password = password.value;
        const { body: answer } = await api('POST', '/users', body);
        fill(created, el('p', { class: 'ok' }, `User ${answer.username} created.`),
          answer.password ? el('p', {}, 'Password (shown once): ', el('code', { 'data-password': '' }, answer.password)) : null);
      } catch (err) { fill(created, el('p', { class: 'error' }, err.message)); }
    },
  }, el('h2', {}, 'New admin user'), field('Username', username), field('Password', password), grid,
  el('button', { type: 'submit', disabled: !may('users', 'create') }, 'Create user'), created);
  return el('div', {}, el('h1', {}, 'Admin users'),
    table(['User', 'Permissions', ''], users.map((u) => el('tr', { 'data-user': u.username }, el('td', {}, u.username),
      el('td', {}, Object.entries(u.permissions).map(([g, n]) => `${g}: ${n.join(', ')}`).join('; ')),
      el('td', {}, el('button', {
        class: 'danger', disabled: !may('users', 'delete') || u.username === session.me?.username,
        onclick: async () => {
          try { await api('DELETE', `/users/${encodeURIComponent(u.username)}`); go('#/users'); } catch (err) { toast(err.message); }
        },
      }, 'Delete'))))),
    el('section', {}, form));
}

function platformUsersScreen() {
  const username = el('input', { name: 'platform-username' });
  const result = el('div');
  return el('div', {}, el('h1', {}, 'Platform users'), el('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const { body } = await api('GET', `/platform-users/${encodeURIComponent(username.value)}`);
        fill(result, el('pre', {}, JSON.stringify(body.user, null, 2)),
          el('button', {
            class: 'danger', disabled: !may('platformUsers', 'delete'),
            onclick: async () => {
              try { await api('DELETE', `/platform-users/${encodeURIComponent(username.value)}`); toast('Deleted.'); } catch (err) { toast(err.message); }
            },
          }, 'Delete this user'));
      } catch (err) { fill(result, el('p', { class: 'error' }, err instanceof ApiError ? err.message : String(err))); }
    },
  }, field('Username', username), el('button', { type: 'submit', disabled: !may('platformUsers', 'read') }, 'Look up')), result);
}

export const screens = {
  login: { render: loginScreen },
  account: { render: accountScreen },
  overview: { render: overviewScreen },
  followers: { render: followersScreen },
  settings: { render: settingsScreen },
  zones: { render: zonesScreen },
  rollouts: { render: rolloutsScreen },
  rollout: { render: rolloutScreen },
  history: { render: historyScreen },
  audit: { render: auditScreen },
  migrations: { render: migrationsScreen },
  users: { render: usersScreen },
  'platform-users': { render: platformUsersScreen },
};
