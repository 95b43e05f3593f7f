// Settings: groups with descriptions and a search, inputs that keep each value's type, changed fields marked,
// Review (the preview of only the changed settings), then save with a message, save and hold, or save and roll
// out. A save carries the revision it was made on (If-Match): another admin's save in between is a conflict.
import { api, el, fill, go, toast, may } from './app.js';
import { field, previewView } from './screens.js';

/** The input of one setting: a string stays a string, a number a number, anything else is JSON text. */
function inputFor(name, value) {
  if (typeof value === 'boolean') {
    const box = el('input', { type: 'checkbox', name });
    box.checked = value;
    return { node: box, read: () => ({ ok: true, value: box.checked }) };
  }
  if (typeof value === 'number') {
    const input = el('input', { type: 'number', name, step: 'any', value: String(value) });
    return { node: input, read: () => (input.value.trim() === '' || Number.isNaN(Number(input.value))
      ? { ok: false, error: 'a number' } : { ok: true, value: Number(input.value) }) };
  }
  if (typeof value === 'string') {
    const input = el('input', { type: 'text', name, value });
    return { node: input, read: () => ({ ok: true, value: input.value }) };
  }
  const area = el('textarea', { name, rows: Math.min(12, JSON.stringify(value, null, 2).split('\n').length + 1) });
  area.value = JSON.stringify(value, null, 2);
  return {
    node: area,
    read: () => {
      try { return { ok: true, value: JSON.parse(area.value) }; } catch (err) { return { ok: false, error: `JSON: ${err.message}` }; }
    },
  };
}

export async function settingsScreen() {
  const { body, headers } = await api('GET', '/admin/settings');
  const revision = (headers.get('etag') || '').replaceAll('"', '');
  const fields = [];
  const search = el('input', { type: 'search', name: 'search', placeholder: 'setting name or description' });
  const groups = Object.entries(body.settings).map(([groupName, group]) => {
    const items = Object.entries(group.settings || {}).map(([name, setting]) => {
      const input = inputFor(name, setting.value);
      const error = el('p', { class: 'error' });
      const wrap = el('div', { class: 'setting', 'data-setting': name },
        field(name, input.node), setting.description ? el('p', { class: 'description' }, setting.description) : null, error);
      const entry = { group: groupName, name, original: setting.value, input, wrap, error, description: setting.description || '' };
      const mark = () => {
        const read = input.read();
        error.textContent = read.ok ? '' : `Not valid: ${read.error}`;
        wrap.classList.toggle('changed', !read.ok || JSON.stringify(read.value) !== JSON.stringify(setting.value));
      };
      input.node.addEventListener('input', mark);
      input.node.addEventListener('change', mark);
      fields.push(entry);
      return wrap;
    });
    return el('section', { 'data-group': groupName }, el('h2', {}, group.name || groupName),
      group.description ? el('p', { class: 'description' }, group.description) : null, items);
  });
  search.addEventListener('input', () => {
    const words = search.value.toLowerCase();
    for (const f of fields) f.wrap.hidden = words !== '' && !`${f.name} ${f.description}`.toLowerCase().includes(words);
  });

  const review = el('div', { 'aria-live': 'polite' });
  const message = el('input', { name: 'message', placeholder: 'what and why' });
  const changes = () => {
    const patch = {};
    const problems = [];
    for (const f of fields) {
      const read = f.input.read();
      if (!read.ok) { problems.push(`${f.name}: ${read.error}`); continue; }
      if (JSON.stringify(read.value) === JSON.stringify(f.original)) continue;
      ((patch[f.group] ||= { settings: {} }).settings[f.name] = { value: read.value });
    }
    return { patch, problems };
  };
  const save = async (mode) => {
    const { patch } = changes();
    const query = mode === 'save' ? '' : '?hold=true';
    try {
      const { body: saved } = await api('PUT', `/admin/settings${query}`, { settings: patch, message: message.value || undefined },
        { 'if-match': `"${revision}"` });
      toast(`Saved as revision ${saved.revision}.`);
      if (mode === 'rollout') go('#/rollouts');
      else go('#/settings');
    } catch (err) {
      if (err.status === 412) {
        fill(review, el('p', { class: 'error', 'data-conflict': '' },
          `Conflict: another change was saved meanwhile (revision ${err.body?.currentRevision ?? err.headers.get('etag')}). `,
          'Nothing was saved. Reload the settings and make the change again.'),
        el('button', { onclick: () => go('#/settings') }, 'Reload'));
      } else fill(review, el('p', { class: 'error' }, err.message));
    }
  };
  const reviewButton = el('button', {
    disabled: !may('settings', 'update'),
    onclick: async () => {
      const { patch, problems } = changes();
      if (problems.length) { fill(review, el('p', { class: 'error' }, problems.join('\n'))); return; }
      if (Object.keys(patch).length === 0) { fill(review, el('p', { class: 'muted' }, 'Nothing changed.')); return; }
      try {
        const { body: preview } = await api('POST', '/admin/settings/preview', { settings: patch });
        fill(review, el('section', { 'data-review': '' }, el('h2', {}, 'Review'),
          el('p', {}, 'Changed: ', Object.values(patch).flatMap((g) => Object.keys(g.settings)).join(', ')),
          previewView(preview), field('Message', message),
          el('button', { onclick: () => save('save') }, 'Save'),
          el('button', { class: 'secondary', onclick: () => save('hold') }, 'Save and hold'),
          el('button', { class: 'secondary', onclick: () => save('rollout') }, 'Save and roll out…')));
      } catch (err) { fill(review, el('p', { class: 'error' }, err.message)); }
    },
  }, 'Review changes');
  return el('div', {}, el('h1', {}, `Settings (revision ${revision})`), field('Search', search), groups,
    el('div', { class: 'actions' }, reviewButton), review);
}
