// Rollouts: a wave builder that shows which machine lands in which wave (the leader's placement rules), the
// list, and a live detail (waves as columns of follower states, the pause countdown, the stop reason) with
// resume, abort, and roll back then abort.
import { api, el, fill, go, toast, may, onEvent } from './app.js';
import { badge, field, time } from './screens.js';

/** A follower named by a pattern: its name, its URL, or a URL pattern where `*` matches anything. */
function matches(pattern, f) {
  if (f.name === pattern || f.url === pattern) return true;
  if (!pattern.includes('*')) return false;
  const escaped = pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
  return new RegExp(`^${escaped}$`).test(f.url);
}

/** The waves the leader will make: each follower in the first wave naming it, the rest last. */
export function place(specs, followers) {
  let remaining = [...followers];
  const waves = [];
  const total = remaining.length;
  for (const spec of specs) {
    let pick;
    if (spec.followers) pick = (f) => spec.followers.some((p) => matches(p, f));
    else if (spec.roles) pick = (f) => spec.roles.includes(f.role);
    else if (spec.zones) pick = (f) => f.zone && spec.zones.includes(f.zone);
    else {
      const count = Math.max(1, Math.ceil((total * spec.percent) / 100));
      pick = (_, index) => index < count;
    }
    const chosen = remaining.filter((f, i) => pick(f, i));
    remaining = remaining.filter((f, i) => !pick(f, i));
    waves.push(chosen);
  }
  waves.push(remaining);
  return waves.filter((w) => w.length > 0);
}

/** Without waves: a canary wave of `canary` followers, then batches of `batchSize` (the rest at once). */
export function batches(canary, batchSize, followers) {
  const waves = [];
  let rest = [...followers];
  if (canary > 0) { waves.push(rest.slice(0, canary)); rest = rest.slice(canary); }
  const size = batchSize > 0 ? batchSize : rest.length;
  while (rest.length > 0) { waves.push(rest.slice(0, size)); rest = rest.slice(size); }
  return waves.filter((w) => w.length > 0);
}

function waveEditor(index, followers, onChange) {
  const kind = el('select', { name: `wave-${index}-kind` }, ['followers', 'roles', 'zones', 'percent'].map((k) => el('option', { value: k }, k)));
  const value = el('input', { name: `wave-${index}-value`, placeholder: 'comma-separated names, roles, zones; or a percent' });
  const row = el('div', { class: 'row', 'data-wave-editor': index }, field(`Wave ${index + 1}`, kind), field('Which', value));
  kind.addEventListener('change', onChange);
  value.addEventListener('input', onChange);
  const spec = () => {
    const items = value.value.split(',').map((s) => s.trim()).filter(Boolean);
    if (items.length === 0) return null;
    if (kind.value === 'percent') return { percent: Number(items[0]) };
    return { [kind.value]: items };
  };
  return { row, spec };
}

export async function rolloutsScreen() {
  const [status, list] = await Promise.all([api('GET', '/admin/status'), api('GET', '/admin/rollouts')]);
  const followers = status.body.followers;
  const editors = [];
  const editorsNode = el('div');
  const placement = el('div', { 'data-placement': '' });
  const pause = el('input', { type: 'number', name: 'pause', min: '0', value: '0' });
  const stopOn = el('input', { type: 'checkbox', name: 'stop-on-unhealthy', id: 'stop-on-unhealthy' });
  stopOn.checked = true;
  const canary = el('input', { type: 'number', name: 'canary', min: '0', placeholder: 'followers in a first wave' });
  const batchSize = el('input', { type: 'number', name: 'batch-size', min: '0', placeholder: 'followers per wave after it' });
  const specs = () => editors.map((e) => e.spec()).filter(Boolean);
  const byBatches = () => specs().length === 0 && (Number(canary.value) > 0 || Number(batchSize.value) > 0);
  const draw = () => {
    const waves = byBatches() ? batches(Number(canary.value) || 0, Number(batchSize.value) || 0, followers)
      : place(specs(), followers);
    fill(placement, el('div', { class: 'waves' }, waves.map((wave, i) => el('div', { class: 'wave', 'data-planned-wave': i },
      el('h3', {}, `Wave ${i + 1}`), el('ul', {}, wave.map((f) => el('li', {}, `${f.name || f.url} (${f.role}${f.zone ? ` @ ${f.zone}` : ''})`)))))));
  };
  canary.addEventListener('input', () => draw());
  batchSize.addEventListener('input', () => draw());
  const addWave = () => {
    const editor = waveEditor(editors.length, followers, draw);
    editors.push(editor);
    editorsNode.append(editor.row);
    draw();
  };
  addWave();
  const start = el('button', {
    disabled: !may('settings', 'update'),
    onclick: async () => {
      const body = { pauseSeconds: Number(pause.value) || 0 };
      if (byBatches()) {
        if (Number(canary.value) > 0) body.canary = Number(canary.value);
        if (Number(batchSize.value) > 0) body.batchSize = Number(batchSize.value);
      } else {
        body.waves = specs().length ? specs() : [{ percent: 100 }];
      }
      if (stopOn.checked) body.stopOn = 'unhealthy';
      try {
        const { body: answer } = await api('POST', '/admin/notify', body);
        if (answer.rollout) go(`#/rollout/${answer.rollout}`);
        else toast('Nothing to roll out.');
      } catch (err) { toast(err.message); }
    },
  }, 'Start rollout');
  const rows = list.body.rollouts.map((r) => el('tr', { 'data-rollout': r.id },
    el('td', {}, el('a', { href: `#/rollout/${r.id}` }, `#${r.id}`)), el('td', {}, badge(r.state)),
    el('td', {}, r.author), el('td', {}, time(r.started)), el('td', {}, `${r.waves.length}`), el('td', {}, r.reason || '')));
  return el('div', {}, el('h1', {}, 'Rollouts'),
    el('section', {}, el('h2', {}, 'New rollout of the current settings'), editorsNode,
      el('button', { class: 'secondary', onclick: addWave }, 'Add a wave'),
      el('p', { class: 'muted' }, 'Or, with no wave above: a canary wave, then batches.'),
      el('div', { class: 'row' }, field('Canary', canary), field('Batch size', batchSize)),
      el('div', { class: 'row' }, field('Pause between waves (s)', pause),
        el('div', {}, stopOn, el('label', { for: 'stop-on-unhealthy' }, ' stop on an unhealthy follower'))),
      el('h3', {}, 'Where each machine lands'), placement, start),
    el('section', {}, el('h2', {}, 'Rollouts'), el('div', { class: 'scroll' }, el('table', {},
      el('thead', {}, el('tr', {}, ['Id', 'State', 'Author', 'Started', 'Waves', 'Reason'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows)))));
}

export async function rolloutScreen(args) {
  const id = Number(args[0]);
  const node = el('div');
  let timer = null;
  const draw = (rollout) => {
    clearInterval(timer);
    const holds = rollout.state === 'running' || rollout.state === 'stopped';
    const countdown = el('span', { 'data-countdown': '' });
    const previous = rollout.waves[rollout.currentWave - 1];
    const current = rollout.waves[rollout.currentWave];
    if (rollout.state === 'running' && current && !current.started && previous?.finished) {
      const tick = () => {
        const left = Math.max(0, previous.finished + rollout.pauseSeconds - Math.round(Date.now() / 1000));
        countdown.textContent = ` next wave in ${left} s`;
      };
      tick();
      timer = setInterval(tick, 1000);
    }
    const act = (label, path, cls) => el('button', {
      class: cls, disabled: !holds || !may('settings', 'update'),
      onclick: async () => { try { await api('POST', path); refresh(); } catch (err) { toast(err.message); } },
    }, label);
    fill(node, el('h1', {}, `Rollout ${rollout.id} `, badge(rollout.state)),
      el('p', {}, `by ${rollout.author}, started ${time(rollout.started)}`, rollout.finished ? `, finished ${time(rollout.finished)}` : '', countdown),
      rollout.reason ? el('p', { class: 'error' }, `Stopped: ${rollout.reason}`) : null,
      el('div', { class: 'waves' }, rollout.waves.map((wave, i) => el('div', { class: 'wave', 'data-wave': i },
        el('h3', {}, `Wave ${i + 1}`, i === rollout.currentWave && holds ? ' (current)' : ''),
        el('ul', {}, wave.followers.map((m) => el('li', { 'data-member': m.name || m.url },
          `${m.name || m.url} `, badge(m.state), m.detail ? el('div', { class: 'muted' }, m.detail) : null)))))),
      act('Resume', `/admin/rollouts/${id}/resume`),
      act('Abort', `/admin/rollouts/${id}/abort`, 'danger'),
      el('button', {
        class: 'danger', disabled: !holds || !may('settings', 'update'),
        onclick: async () => {
          try {
            const history = (await api('GET', '/admin/settings/history')).body.revisions;
            if (history.length < 2) throw new Error('no earlier revision to roll back to');
            await api('POST', '/admin/settings/rollback', { revision: history[1].revision });
            await api('POST', `/admin/rollouts/${id}/abort`);
            toast(`Rolled back to revision ${history[1].revision} and aborted.`);
            refresh();
          } catch (err) { toast(err.message); }
        },
      }, 'Roll back, then abort'));
  };
  const refresh = async () => draw((await api('GET', `/admin/rollouts/${id}`)).body);
  await refresh();
  const stop = onEvent((type, payload) => {
    if (type !== 'rollouts') return;
    const rollout = payload.rollouts.find((r) => r.id === id);
    if (rollout) draw(rollout);
  });
  return { node, leave: () => { stop(); clearInterval(timer); } };
}
