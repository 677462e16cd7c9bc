// The live workload map: fetches api/graph every refresh_seconds and draws
// it with cytoscape.js. Workloads are nodes, grouped by the chosen owner
// attribute; buckets (external, unattributed, ...) stand on their own.
'use strict';

(function () {
  const bucketLabels = {
    external: 'external',
    unattributed: 'unattributed',
    conflict: 'conflict',
    uncertain: 'uncertain',
    no_owner: 'no owner',
    other: 'other',
  };
  const grey = [154, 165, 177];
  const orange = [227, 160, 58];
  const red = [209, 36, 47];

  const cy = cytoscape({
    container: document.getElementById('graph'),
    wheelSensitivity: 0.3,
    style: [
      { selector: 'node', style: {
        'label': 'data(label)', 'font-size': 12, 'text-valign': 'bottom', 'text-margin-y': 4,
        'width': 34, 'height': 34, 'background-color': '#4f7cac', 'color': '#1d2733',
        'text-background-color': '#fff', 'text-background-opacity': 0.8, 'text-background-padding': 2,
      } },
      { selector: 'node[kind = "workload"]', style: { 'shape': 'round-rectangle' } },
      { selector: 'node[kind = "external"]', style: { 'shape': 'diamond', 'background-color': '#8c959f' } },
      { selector: 'node[kind = "unattributed"], node[kind = "conflict"], node[kind = "uncertain"]', style: {
        'shape': 'octagon', 'background-color': '#e3a03a', 'border-width': 2, 'border-style': 'dashed', 'border-color': '#9a6700',
      } },
      { selector: 'node[kind = "no_owner"]', style: { 'shape': 'hexagon', 'background-color': '#b69ad6' } },
      { selector: 'node[kind = "other"]', style: {
        'shape': 'ellipse', 'background-color': '#d0d7de', 'border-width': 2, 'border-style': 'dashed', 'border-color': '#57606a',
      } },
      { selector: 'node[kind = "group"]', style: {
        'shape': 'round-rectangle', 'background-color': '#eef2f6', 'background-opacity': 0.9, 'border-width': 1,
        'border-color': '#9aa5b1', 'label': 'data(label)', 'text-valign': 'top', 'text-halign': 'center',
        'font-weight': 600, 'text-margin-y': -4, 'padding': 16,
      } },
      { selector: 'edge', style: {
        'width': 'data(width)', 'line-color': 'data(color)', 'target-arrow-color': 'data(color)',
        'target-arrow-shape': 'triangle', 'curve-style': 'bezier', 'arrow-scale': 0.9,
        'label': 'data(label)', 'font-size': 10, 'text-rotation': 'autorotate', 'color': '#57606a',
        'text-background-color': '#fff', 'text-background-opacity': 0.8, 'text-background-padding': 1,
      } },
      { selector: 'edge.loop', style: { 'curve-style': 'bezier', 'loop-direction': '-45deg', 'loop-sweep': '-60deg' } },
      { selector: ':selected', style: { 'overlay-color': '#0969da', 'overlay-opacity': 0.2, 'overlay-padding': 6 } },
    ],
  });

  const groupSelect = document.getElementById('group-by');
  const weightSelect = document.getElementById('weight');
  const statusEl = document.getElementById('status');
  let graph = null;
  let groupBy = null; // null until the first graph says the configured default
  let selected = null;
  let renders = 0;
  let layoutKey = '';

  // window.flowmap lets tests and the browser console read what is drawn.
  window.flowmap = {
    cy,
    graph: () => graph,
    renders: () => renders,
  };

  function mix(a, b, t) {
    return 'rgb(' + a.map((v, i) => Math.round(v + (b[i] - v) * t)).join(',') + ')';
  }

  // failureColour: grey without failures, orange for the first, red when
  // every connection failed.
  function failureColour(failed, flows) {
    if (!flows || !failed) return mix(grey, grey, 0);
    return mix(orange, red, failed / flows);
  }

  function fmtInt(n) { return Number(n).toLocaleString('en-US'); }

  function fmtBytes(n) {
    const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
    let v = n;
    let u = 0;
    while (v >= 1000 && u < units.length - 1) { v /= 1000; u++; }
    return u === 0 ? n + ' B' : v.toFixed(v < 10 ? 2 : 1) + ' ' + units[u];
  }

  function fmtRTT(us) {
    if (us < 1000) return us + ' µs';
    if (us < 1e6) return +(us / 1000).toPrecision(3) + ' ms';
    return +(us / 1e6).toPrecision(3) + ' s';
  }

  function fmtShare(part, whole) {
    if (!whole || !part) return '0%';
    return fmtInt(part) + ' of ' + fmtInt(whole) + ' (' + +(100 * part / whole).toFixed(1) + '%)';
  }

  function nodeLabel(n) {
    return n.kind === 'workload' ? n.name : bucketLabels[n.kind] || n.kind;
  }

  function groupOf(n) {
    if (n.kind !== 'workload' || !groupBy) return '';
    if (groupBy === graph.group_by) return n.group || '';
    // Own properties only: an attribute named like an Object built-in
    // (constructor, toString) must not group every node without it.
    return (n.attributes && Object.hasOwn(n.attributes, groupBy) && n.attributes[groupBy]) || '';
  }

  function edgeWeight(e) {
    return weightSelect.value === 'flows' ? e.flows : e.bytes_to_server + e.bytes_to_client;
  }

  function edgeLabel(e) {
    return weightSelect.value === 'flows' ? fmtInt(e.flows) + ' conn' : fmtBytes(e.bytes_to_server + e.bytes_to_client);
  }

  function fillGroupOptions() {
    const names = new Set();
    if (graph.group_by) names.add(graph.group_by);
    for (const n of graph.nodes) {
      for (const k of Object.keys(n.attributes || {})) names.add(k);
    }
    const want = [''].concat([...names].sort());
    const have = [...groupSelect.options].map((o) => o.value);
    if (want.join('\n') === have.join('\n')) return;
    groupSelect.replaceChildren(...want.map((name) => {
      const o = document.createElement('option');
      o.value = name;
      o.textContent = name || '(none)';
      return o;
    }));
    groupSelect.value = groupBy || '';
  }

  function render() {
    fillGroupOptions();
    const maxWeight = Math.max(1, ...graph.edges.map(edgeWeight));
    const wanted = new Map();
    for (const n of graph.nodes) {
      const g = groupOf(n);
      if (g && !wanted.has('group/' + g)) {
        wanted.set('group/' + g, { group: 'nodes', data: { id: 'group/' + g, label: g, kind: 'group' } });
      }
      wanted.set(n.id, { group: 'nodes', data: { id: n.id, label: nodeLabel(n), kind: n.kind, parent: g ? 'group/' + g : undefined } });
    }
    for (const e of graph.edges) {
      wanted.set(e.id, { group: 'edges', classes: e.source === e.target ? 'loop' : '', data: {
        id: e.id, source: e.source, target: e.target, label: edgeLabel(e),
        width: 1.5 + 10 * Math.sqrt(edgeWeight(e) / maxWeight), color: failureColour(e.failed, e.flows),
      } });
    }
    cy.batch(() => {
      cy.elements().forEach((el) => {
        const w = wanted.get(el.id());
        if (!w || (el.isNode() && (el.data('parent') || undefined) !== w.data.parent)) el.remove();
      });
      for (const [id, w] of wanted) {
        const el = cy.getElementById(id);
        if (el.empty()) cy.add(w);
        else el.data(w.data);
      }
    });
    // Lay out again only when nodes come, go or change group: edges alone
    // changing at every refresh must not move the graph under the
    // reader's eyes.
    const key = [...wanted.values()].filter((w) => w.group === 'nodes').map((w) => w.data.id + '@' + (w.data.parent || '')).sort().join('\n');
    if (key !== layoutKey) {
      layoutKey = key;
      cy.layout({ name: 'cose', animate: false, randomize: false, nodeDimensionsIncludeLabels: true, padding: 40, nodeRepulsion: () => 400000, idealEdgeLength: () => 110 }).run();
    }
    if (selected && cy.getElementById(selected).empty()) selected = null;
    showDetails();
    const workloads = graph.nodes.filter((n) => n.kind === 'workload').length;
    statusEl.textContent = 'last ' + Math.round(graph.window_seconds / 60 * 10) / 10 + ' min · ' + workloads +
      ' workloads · ' + graph.edges.length + ' edges · updated ' + new Date(graph.end).toLocaleTimeString('en-GB');
    renders++;
  }

  function row(name, value) {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    th.textContent = name;
    const td = document.createElement('td');
    td.textContent = value;
    tr.append(th, td);
    return tr;
  }

  function figuresRows(f) {
    return [
      row('Connections', fmtInt(f.flows)),
      row('Failed', fmtShare(f.failed, f.flows)),
    ];
  }

  // bytesText gives the exact count beside a rounded one.
  function bytesText(n) {
    return n < 1000 ? n + ' B' : fmtBytes(n) + ' (' + fmtInt(n) + ' B)';
  }

  function commonRows(f) {
    const ports = f.ports.map((p) => p.port + ' (' + fmtInt(p.flows) + ')');
    if (f.other_port_flows) ports.push('other (' + fmtInt(f.other_port_flows) + ')');
    return [
      row('Retransmits', fmtInt(f.retransmits)),
      row('RTT p50 / p90 / p99', f.rtt_us.samples ? [f.rtt_us.p50, f.rtt_us.p90, f.rtt_us.p99].map(fmtRTT).join(' / ') : 'no samples'),
      row('Server ports', ports.length ? ports.join(', ') : 'none'),
    ];
  }

  function showDetails() {
    const title = document.getElementById('details-title');
    const body = document.getElementById('details-body');
    if (!selected || !graph) {
      title.textContent = 'Details';
      return;
    }
    const table = document.createElement('table');
    const node = graph.nodes.find((n) => n.id === selected);
    const edge = node ? null : graph.edges.find((e) => e.id === selected);
    if (node) {
      title.textContent = nodeLabel(node);
      table.append(row('Kind', node.kind));
      if (node.group) table.append(row('Group', node.group));
      table.append(...figuresRows(node));
      table.append(row('Bytes sent', bytesText(node.bytes_sent)));
      table.append(row('Bytes received', bytesText(node.bytes_received)));
      table.append(...commonRows(node));
      table.append(row('Unattributed peers', fmtShare(node.unattributed_flows, node.flows)));
      table.append(row('External peers', fmtShare(node.external_flows, node.flows)));
      for (const [k, v] of Object.entries(node.attributes || {}).sort()) table.append(row(k, v));
    } else if (edge) {
      const src = graph.nodes.find((n) => n.id === edge.source);
      const dst = graph.nodes.find((n) => n.id === edge.target);
      title.textContent = nodeLabel(src) + ' → ' + nodeLabel(dst);
      const unattributed = ['unattributed', 'conflict', 'uncertain'].includes(dst.kind) || ['unattributed', 'conflict', 'uncertain'].includes(src.kind);
      table.append(...figuresRows(edge));
      table.append(row('Bytes client → server', bytesText(edge.bytes_to_server)));
      table.append(row('Bytes server → client', bytesText(edge.bytes_to_client)));
      table.append(...commonRows(edge));
      table.append(row('Unattributed peers', fmtShare(unattributed ? edge.flows : 0, edge.flows)));
    } else {
      title.textContent = 'Details';
      return;
    }
    table.id = 'details-table';
    body.replaceChildren(table);
  }

  cy.on('tap', 'node[kind != "group"], edge', (evt) => {
    selected = evt.target.id();
    showDetails();
  });

  groupSelect.addEventListener('change', () => {
    groupBy = groupSelect.value;
    if (graph) render();
  });
  weightSelect.addEventListener('change', () => { if (graph) render(); });

  async function refresh() {
    let delay = 2000;
    try {
      const resp = await fetch('api/graph', { cache: 'no-store' });
      if (!resp.ok) throw new Error(resp.status + ' ' + resp.statusText);
      graph = await resp.json();
      delay = graph.refresh_seconds * 1000;
      if (groupBy === null) groupBy = graph.group_by;
      render();
    } catch (err) {
      statusEl.textContent = 'cannot reach the collector: ' + err.message;
    }
    setTimeout(refresh, delay);
  }
  refresh();
})();
