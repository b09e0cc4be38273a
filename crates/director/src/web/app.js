// xdpvs status page: the director's state, live (server-sent events, else a poll every
// two seconds). Everything shown comes from /api/v1/; text from the director is set as
// text, never as markup.
'use strict';

const $ = (id) => document.getElementById(id);
const history = { services: {}, reals: {} };
const SERVICE_POINTS = 450;
const REAL_POINTS = 150;
let events = [];
let lastEvent = 0;
let latest = null;
let via = 'connecting';
let lastUpdate = 0;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function si(n, unit) {
  const v = Number(n) || 0;
  const steps = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [f, p] of steps) if (Math.abs(v) >= f) return (v / f).toFixed(v / f >= 100 ? 0 : 1) + ' ' + p + unit;
  return Math.round(v) + (unit ? ' ' + unit : '');
}

function ago(epoch) {
  if (!epoch) return 'never';
  const s = Math.max(0, Math.round(Date.now() / 1000 - epoch));
  if (s < 120) return s + ' s ago';
  if (s < 7200) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}

function duration(s) {
  s = Math.round(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + (s % 60) + 's';
}

function serviceKey(s) {
  const at = s.vip.includes(':') ? '[' + s.vip + ']' : s.vip;
  return s.protocol + ' ' + at + ':' + s.port;
}

function point(t, r) {
  return [t, r.cps, r.in_pps + r.out_pps, r.in_bps + r.out_bps];
}

function keep(map, key, p, cap) {
  const q = map[key] || (map[key] = []);
  if (q.length && q[q.length - 1][0] >= p[0]) return;
  q.push(p);
  while (q.length > cap) q.shift();
}

// A polyline of column `col` of `points` in a width × height box; the largest value.
function line(points, col, w, h) {
  if (!points || points.length < 2) return { d: '', max: 0 };
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const max = Math.max(1, ...points.map((p) => p[col]));
  const d = points.map((p) => {
    const x = t1 > t0 ? (p[0] - t0) / (t1 - t0) * w : 0;
    const y = h - p[col] / max * (h - 4) - 2;
    return x.toFixed(1) + ',' + y.toFixed(1);
  }).join(' ');
  return { d, max };
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function plot(points) {
  const w = 720, h = 120;
  const s = svg('svg', { class: 'plot', viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none', role: 'img' });
  const pk = line(points, 2, w, h);
  const cps = line(points, 1, w, h);
  if (pk.d) s.append(svg('polyline', { points: pk.d }));
  if (cps.d) s.append(svg('polyline', { points: cps.d, class: 'cps' }));
  const label = svg('text', { x: 4, y: 12, class: 'axis' });
  label.textContent = 'packets/s (max ' + si(pk.max, '') + ') · connections/s dashed (max ' + si(cps.max, '') + ') · last 15 min';
  s.append(label);
  s.setAttribute('aria-label', label.textContent);
  return s;
}

function spark(points) {
  const w = 120, h = 24;
  const s = svg('svg', { class: 'spark', viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none' });
  const l = line(points, 2, w, h);
  if (l.d) s.append(svg('polyline', { points: l.d }));
  return s;
}

function token() {
  return sessionStorage.getItem('xdpvs-token') || '';
}

async function act(action, service, real, weight) {
  const body = { service, real };
  if (weight !== undefined) body.weight = weight;
  const out = $('admin-result');
  try {
    const r = await fetch('/api/v1/' + action, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Xdpvs-Token': token() },
      body: JSON.stringify(body),
    });
    const j = await r.json();
    out.textContent = r.ok ? 'applied: ' + j.command : 'refused (' + r.status + '): ' + (j.error || '') + (j.command ? ' — ' + j.command : '');
    out.className = r.ok ? 'up' : 'down';
  } catch (e) {
    out.textContent = 'failed: ' + e;
    out.className = 'down';
  }
}

function commandOf(svc, r, weight) {
  const flag = svc.protocol === 'UDP' ? '-u' : '-t';
  const vip = serviceKey(svc).split(' ')[1];
  const at = r.address.includes(':') ? '[' + r.address + ']' : r.address;
  if (weight === null) return `xdpvs -d ${flag} ${vip} -r ${at}`;
  const m = { route: '-g', masq: '-m', tunnel: '-i' }[r.forward] || '-g';
  return `xdpvs -e ${flag} ${vip} -r ${at}:${r.port} ${m} -w ${weight}`;
}

function actions(svc, r) {
  const key = serviceKey(svc);
  const b = (cls, text, f, cmd) => {
    const e = el('button', { class: cls, type: 'button', title: cmd }, text);
    e.addEventListener('click', f);
    return e;
  };
  return el('td', { class: 'actions' },
    b('quiesce', 'Quiesce', () => act('quiesce', key, r.address), commandOf(svc, r, 0)),
    b('restore', 'Restore', () => act('restore', key, r.address), 'the weight it had before this page quiesced it'),
    b('weight', 'Weight…', () => {
      const w = prompt('Weight for ' + r.address + ' (0 to 65535)', String(r.weight));
      if (w !== null && /^\d+$/.test(w.trim())) act('weight', key, r.address, Number(w.trim()));
    }, commandOf(svc, r, 'N')),
    b('remove', 'Remove', () => {
      if (confirm('Remove ' + r.address + ' from ' + key + '?\n' + commandOf(svc, r, null))) act('remove', key, r.address);
    }, commandOf(svc, r, null)),
    el('code', { class: 'cmd' }, commandOf(svc, r, 0)));
}

function health(r) {
  if (!r.health) return el('td', {}, r.sorry_server ? 'sorry server' : 'no check');
  const h = r.health;
  return el('td', { class: 'health' },
    el('span', { class: h.up ? 'up' : 'down' }, h.up ? 'up' : 'down'),
    ' ', el('span', { class: 'why' }, h.last),
    el('br'),
    el('small', {}, 'checked ' + ago(h.checked_at) + ' · ' + (h.changed_at ? (h.up ? 'up' : 'down') + ' since ' + ago(h.changed_at) : 'no transition yet')));
}

function renderDirector(s) {
  const d = s.director, f = d.facts;
  $('iface').textContent = 'on ' + f.iface + (f.servers_iface ? ' / ' + f.servers_iface : '');
  const q = f.queues.map((x) => 'queue ' + x.queue + ': core ' + (x.core === null ? 'any' : x.core) + ', ' + x.bind + ', ' + x.poll + ' polling').join('; ');
  const item = (k, v) => el('span', {}, el('b', {}, k + ': '), v);
  const parts = [
    item('version', f.version),
    item('up', duration(d.uptime_s)),
    item('XDP', f.xdp_mode),
    item('queues', q),
  ];
  if (d.vrrp.length) parts.push(item('VRRP', d.vrrp.map((v) => v.vip + (v.served ? ' held (master)' : ' silent (backup)')).join(', ')));
  if (d.announced) parts.push(item('announce', d.announced.map((v) => v.vip + (v.announced ? ' announced' : ' withdrawn')).join(', ')));
  if (d.sync && d.sync.length) parts.push(item('sync daemon', d.sync.map((r) => r.role + ' on ' + r.iface + (r.follows ? ' (follows ' + r.follows + ')' : '')).join(', ')));
  $('director').replaceChildren(el('div', { class: 'facts' }, parts));
  $('admin').hidden = !d.admin;
}

function renderServices(s) {
  const admin = s.director.admin;
  const out = s.services.services.map((svc) => {
    const key = serviceKey(svc);
    const flags = [svc.scheduler].concat(svc.sched_flags || []);
    if (svc.persistent) flags.push('persistent ' + svc.persistent.timeout + ' s');
    if (svc.sorry_server) flags.push('sorry server ' + svc.sorry_server);
    if (!svc.quorum.held) flags.push('quorum lost');
    const rate = svc.rate, tot = svc.stats;
    const rows = svc.reals.map((r) => {
      const cells = [
        el('td', {}, r.address + ':' + r.port),
        el('td', {}, r.forward),
        el('td', { class: 'num' }, r.weight + (r.effective_weight !== r.weight ? ' → ' + r.effective_weight : '')),
        health(r),
        el('td', { class: 'num active' }, r.active_conns),
        el('td', { class: 'num inactive' }, r.inactive_conns),
        el('td', { class: 'num cps' }, r.rate.cps),
        el('td', { class: 'num pps' }, si(r.rate.in_pps + r.rate.out_pps, '')),
        el('td', { class: 'num bps' }, si(r.rate.in_bps + r.rate.out_bps, 'B')),
        el('td', {}, spark(history.reals[key + '|' + r.address])),
      ];
      if (admin) cells.push(actions(svc, r));
      return el('tr', { 'data-real': r.address, class: r.health && !r.health.up ? 'is-down' : 'is-up' }, cells);
    });
    const head = ['Real server', 'Forward', 'Weight', 'Health', 'ActiveConn', 'InActConn', 'CPS', 'Pkt/s', 'Bytes/s', 'Last 5 min'];
    if (admin) head.push('Admin');
    return el('section', { class: 'service', 'data-key': key },
      el('div', { class: 'svc-head' },
        el('h2', {}, key),
        el('span', {}, flags.join(' · '))),
      el('div', { class: 'rates' },
        el('span', {}, el('b', {}, 'now: '), el('span', { class: 'svc-cps' }, rate.cps), ' conn/s · ', el('span', { class: 'svc-pps' }, si(rate.in_pps + rate.out_pps, 'pkt/s')), ' · ', si(rate.in_bps + rate.out_bps, 'B/s')),
        el('span', {}, el('b', {}, 'total: '), si(tot.conns, 'conns'), ' · ', si(tot.in_pkts + tot.out_pkts, 'pkts'), ' · ', si(tot.in_bytes + tot.out_bytes, 'B'))),
      plot(history.services[key]),
      el('div', { class: 'scroll' }, el('table', { class: 'reals' },
        el('thead', {}, el('tr', {}, head.map((h) => el('th', {}, h)))),
        el('tbody', {}, rows))));
  });
  if (!out.length) out.push(el('p', {}, 'No service yet: add one (xdpvs -A -t VIP:PORT -s rr).'));
  $('services').replaceChildren(...out);
}

function renderWorkers(s) {
  const head = el('tr', {}, ['Worker', 'Frames', 'Forwarded', 'Replies', 'Dropped', 'Table', 'TX ring full', 'Drops by reason'].map((h) => el('th', {}, h)));
  const rows = s.workers.map((w) => el('tr', {},
    el('td', {}, w.worker),
    el('td', { class: 'num' }, si(w.frames, '')),
    el('td', { class: 'num' }, si(w.forwarded, '')),
    el('td', { class: 'num' }, si(w.replies, '')),
    el('td', { class: 'num' }, si(w.dropped, '')),
    el('td', { class: 'num' }, w.entries + ' / ' + w.capacity),
    el('td', { class: 'num' }, w.tx_ring_full),
    el('td', { class: 'why' }, Object.entries(w.drops).map(([k, v]) => k + ' ' + v).join(', ') || '—')));
  $('workers').replaceChildren(el('thead', {}, head), el('tbody', {}, rows));
}

function renderEvents() {
  const items = events.slice().reverse().map((e) => el('li', { 'data-kind': e.kind },
    el('span', { class: 'kind' }, e.kind), ' ',
    el('time', { datetime: new Date(e.at * 1000).toISOString() }, new Date(e.at * 1000).toLocaleTimeString()), ' ',
    e.text));
  if (!items.length) items.push(el('li', {}, 'nothing yet'));
  $('events').replaceChildren(...items);
}

async function mergeEvents(s) {
  const e = s.events;
  const known = events.length ? events[events.length - 1].seq : 0;
  if (e.last > known) {
    let fresh = e.recent.filter((x) => x.seq > known);
    if (fresh.length && fresh[0].seq > known + 1) {
      try { fresh = (await getJSON('/api/v1/events?since=' + known)).events; } catch (_) { /* next time */ }
    }
    events = events.concat(fresh).slice(-200);
  }
  lastEvent = e.last;
}

async function apply(s, fresh) {
  latest = s;
  lastUpdate = Date.now();
  if (fresh) {
    for (const svc of s.services.services) {
      const key = serviceKey(svc);
      keep(history.services, key, point(s.t, svc.rate), SERVICE_POINTS);
      for (const r of svc.reals) keep(history.reals, key + '|' + r.address, point(s.t, r.rate), REAL_POINTS);
    }
  }
  await mergeEvents(s);
  renderDirector(s);
  renderServices(s);
  renderWorkers(s);
  renderEvents();
  live();
}

function live() {
  const l = $('live');
  const age = (Date.now() - lastUpdate) / 1000;
  const stale = !lastUpdate || age > 6;
  l.className = 'live' + (stale ? ' stale' : '');
  l.textContent = (stale ? 'no news for ' + Math.round(age) + ' s' : 'live') + ' (' + via + ')' +
    (lastUpdate ? ' · updated ' + new Date(lastUpdate).toLocaleTimeString() : '');
}

async function getJSON(url) {
  const r = await fetch(url, { cache: 'no-store' });
  if (!r.ok) throw new Error(url + ': ' + r.status);
  return r.json();
}

function poll() {
  via = 'polling every 2 s';
  const tick = async () => {
    try { await apply(await getJSON('/api/v1/state'), true); } catch (_) { live(); }
  };
  tick();
  setInterval(tick, 2000);
}

function connect() {
  if (!window.EventSource) return poll();
  const es = new EventSource('/api/v1/stream');
  let failures = 0;
  via = 'server-sent events';
  es.onmessage = (m) => { failures = 0; apply(JSON.parse(m.data), true); };
  es.onerror = () => {
    failures += 1;
    if (failures >= 3) { es.close(); poll(); }
  };
}

async function start() {
  const t = $('token');
  t.value = token();
  t.addEventListener('input', () => sessionStorage.setItem('xdpvs-token', t.value));
  try {
    const h = await getJSON('/api/v1/history');
    for (const [k, v] of Object.entries(h.services)) history.services[k] = v;
    for (const [k, v] of Object.entries(h.reals)) history.reals[k] = v;
  } catch (_) { /* the live points fill it */ }
  try {
    const e = await getJSON('/api/v1/events');
    events = e.events;
    lastEvent = e.last;
  } catch (_) { /* the state's recent events fill it */ }
  try { await apply(await getJSON('/api/v1/state'), false); } catch (_) { live(); }
  setInterval(live, 1000);
  connect();
}

start();
