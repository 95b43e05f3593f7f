// Zones: what each zone overrides and which followers it holds; change, add or drop an override, review the
// preview per variant, then save (If-Match: another admin's save in between is a conflict).
import { api, el, fill, go, toast, may } from './app.js';
import { field, previewView } from './screens.js';

export async function zonesScreen() {
  const [{ body: zonesBody, headers }, { body: settingsBody }] = await Promise.all([
    api('GET', '/admin/zones'), api('GET', '/admin/settings')]);
  const revision = (headers.get('etag') || '').replaceAll('"', '');
  // Every setting of vars, by name, with its group: what a zone may override.
  const home = new Map();
  for (const [group, g] of Object.entries(settingsBody.settings)) {
    for (const name of Object.keys(g.settings || {})) home.set(name, group);
  }
  const edits = new Map();
  const key = (zone, name) => `${zone}\u0000${name}`;
  const patch = () => {
    const zones = {};
    for (const [k, edit] of edits) {
      const [zone, name] = k.split('\u0000');
      const group = home.get(name);
      ((zones[zone] ||= {})[group] ||= { settings: {} }).settings[name] = edit;
    }
    return zones;
  };
  const zoneSection = (zone, overrides) => {
    const rows = el('tbody');
    for (const [group, g] of Object.entries(overrides)) {
      for (const [name, setting] of Object.entries(g.settings || {})) {
        const input = el('input', { name: `${zone}-${name}`, value: typeof setting.value === 'string' ? setting.value : JSON.stringify(setting.value) });
        const parse = () => (typeof setting.value === 'string' ? input.value : JSON.parse(input.value));
        input.addEventListener('input', () => {
          try { edits.set(key(zone, name), { value: parse() }); input.parentElement.classList.add('changed'); } catch { /* checked at review */ }
        });
        rows.append(el('tr', { 'data-override': `${zone}.${name}` }, el('td', {}, group), el('td', {}, name), el('td', {}, input),
          el('td', {}, el('button', {
            class: 'secondary', onclick: () => { edits.set(key(zone, name), { remove: true }); rows.querySelector(`[data-override="${zone}.${name}"]`).hidden = true; },
          }, 'Drop'))));
      }
    }
    const name = el('select', { name: `${zone}-new-setting` }, [...home.keys()].map((n) => el('option', { value: n }, n)));
    const value = el('input', { name: `${zone}-new-value` });
    const add = el('button', {
      class: 'secondary',
      onclick: () => {
        edits.set(key(zone, name.value), { value: value.value });
        rows.append(el('tr', { class: 'changed' }, el('td', {}, home.get(name.value)), el('td', {}, name.value), el('td', {}, value.value), el('td', {}, 'new')));
      },
    }, 'Add override');
    return el('section', { 'data-zone': zone }, el('h2', {}, `Zone ${zone}`),
      el('p', { class: 'muted' }, 'Followers: ', (zonesBody.followers[zone] || []).join(', ') || 'none'),
      el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, el('tr', {}, ['Group', 'Setting', 'Value', ''].map((h) => el('th', { scope: 'col' }, h)))), rows)),
      el('div', { class: 'row' }, field('Setting', name), field('Value (text)', value)), add);
  };
  const newZone = el('input', { name: 'new-zone', placeholder: 'letters, digits, - and _' });
  const sections = el('div', {}, Object.entries(zonesBody.zones).map(([zone, overrides]) => zoneSection(zone, overrides)));
  const review = el('div', { 'aria-live': 'polite' });
  const message = el('input', { name: 'zones-message', placeholder: 'what and why' });
  const save = async () => {
    try {
      const { body } = await api('PUT', '/admin/zones', { zones: patch(), message: message.value || undefined }, { 'if-match': `"${revision}"` });
      toast(`Saved as revision ${body.revision}.`);
      go('#/zones');
    } catch (err) {
      fill(review, el('p', { class: 'error', 'data-conflict': err.status === 412 ? '' : undefined },
        err.status === 412 ? 'Conflict: another change was saved meanwhile. Nothing was saved; reload and make the change again.' : err.message));
    }
  };
  return el('div', {}, el('h1', {}, `Zones (revision ${revision})`), sections,
    el('section', {}, el('h2', {}, 'New zone'), field('Name', newZone), el('button', {
      class: 'secondary',
      onclick: () => { if (newZone.value) sections.append(zoneSection(newZone.value, {})); },
    }, 'Add zone')),
    el('button', {
      disabled: !may('settings', 'update'),
      onclick: async () => {
        if (edits.size === 0) { fill(review, el('p', { class: 'muted' }, 'Nothing changed.')); return; }
        try {
          const { body } = await api('POST', '/admin/zones/preview', { zones: patch() });
          fill(review, el('section', { 'data-review': '' }, el('h2', {}, 'Review'), previewView(body), field('Message', message),
            el('button', { onclick: save }, 'Save zones')));
        } catch (err) { fill(review, el('p', { class: 'error' }, err.message)); }
      },
    }, 'Review zone changes'), review);
}
