// A main-area panel with a deployment's monitoring chart and drift table, with no kernel: the
// server extension serves the chart's Vega-Lite spec, and JupyterLab's own Vega renderer draws
// it (nothing is fetched from elsewhere). It refreshes while it is visible.
import { MimeModel, IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { IDriftRow, IMonitorView, getMonitor } from './api';
import { RefreshingWidget } from './refreshing';

const VEGALITE = 'application/vnd.vegalite.v5+json';
const WINDOWS = ['15min', '1h', '6h', '24h', '7d'];

function el(tag: string, attrs: { [k: string]: string } = {}, text = ''): HTMLElement {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, v);
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}

function num(value: number | null | undefined, digits = 3): string {
  return value === null || value === undefined ? '' : value.toFixed(digits);
}

export class MonitorPanel extends RefreshingWidget {
  constructor(
    readonly deployment: string,
    private readonly _rendermime: IRenderMimeRegistry,
    refreshSeconds: number
  ) {
    super(refreshSeconds);
    this.id = `mlops-lab-monitor-${deployment}`;
    this.addClass('mlops-lab-monitor');
    this.title.label = `Monitor ${deployment}`;
    this.title.closable = true;
    this.node.setAttribute('data-test-id', 'mlops-monitor-panel');
    const bar = el('div', { class: 'mlops-lab-monitor-bar' });
    for (const w of WINDOWS) {
      const b = el('button', { class: 'mlops-lab-action', 'data-test-id': `mlops-window-${w}` }, w);
      b.addEventListener('click', () => {
        this._since = w;
        void this.refresh();
      });
      bar.append(b);
    }
    this._status = el('span', { class: 'mlops-lab-monitor-status', 'data-test-id': 'mlops-monitor-status' });
    bar.append(this._status);
    this._chart = el('div', { class: 'mlops-lab-monitor-chart', 'data-test-id': 'mlops-monitor-chart' });
    this._table = el('div', { class: 'mlops-lab-monitor-drift', 'data-test-id': 'mlops-monitor-drift' });
    this.node.append(bar, this._chart, el('h3', {}, 'Drift against the reference'), this._table);
  }

  async refresh(): Promise<void> {
    if (this._busy) {
      return;
    }
    this._busy = true;
    try {
      const view = await getMonitor(this.deployment, this._since);
      await this._draw(view);
      this._status.textContent = `${view.since} · updated ${new Date(view.generated_at * 1000).toLocaleTimeString()}`;
      this._status.setAttribute('data-kind', 'ok');
    } catch (error) {
      this._status.textContent = `${error instanceof Error ? error.message : error}`;
      this._status.setAttribute('data-kind', 'error');
    } finally {
      this._busy = false;
    }
  }

  private async _draw(view: IMonitorView): Promise<void> {
    if (!this._rendermime.getFactory(VEGALITE)) {
      this._chart.textContent = 'This JupyterLab has no Vega-Lite renderer (the @jupyterlab/vega5-extension is disabled).';
      return;
    }
    const renderer = this._rendermime.createRenderer(VEGALITE);
    await renderer.renderModel(new MimeModel({ data: { [VEGALITE]: view.spec } }));
    if (this._renderer) {
      this._renderer.dispose();
    }
    this._chart.replaceChildren();
    Widget.attach(renderer, this._chart);
    this._renderer = renderer;
    this._table.replaceChildren(this._driftTable(view.drift, view.reference));
  }

  private _driftTable(rows: IDriftRow[], reference: string | null): HTMLElement {
    if (!rows.length) {
      return el('p', {}, 'No drift to show yet: no live data in this window.');
    }
    const table = el('table', { class: 'mlops-lab-drift-table' });
    const head = el('tr');
    for (const c of ['feature', 'kind', 'PSI', 'KS p', 'chi² p', 'JS', 'drift']) {
      head.append(el('th', {}, c));
    }
    table.append(head);
    for (const r of rows) {
      const tr = el('tr', { 'data-test-id': `mlops-drift-${r.feature}`, 'data-drifted': String(r.drifted) });
      for (const v of [r.feature, r.kind, num(r.psi), num(r.ks_pvalue, 4), num(r.chi2_pvalue, 4), num(r.js_distance),
                       r.drifted ? 'DRIFT' : 'ok']) {
        tr.append(el('td', {}, v));
      }
      table.append(tr);
    }
    const wrap = el('div');
    if (reference) {
      wrap.append(el('p', { class: 'mlops-lab-reference' }, `reference: ${reference}`));
    }
    wrap.append(table);
    return wrap;
  }

  private _since = '1h';
  private _busy = false;
  private _status: HTMLElement;
  private _chart: HTMLElement;
  private _table: HTMLElement;
  private _renderer: Widget | null = null;
}
