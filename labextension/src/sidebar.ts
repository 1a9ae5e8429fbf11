// The left-area panel: models (expandable to versions, tags, aliases) and deployments with live
// status badges, traffic split and request rate, and the actions on a deployment.
import { Clipboard, Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import {
  IDeployment,
  IRegisteredModel,
  deleteDeployment,
  getModel,
  listDeployments,
  listModels,
  restart,
  rollback
} from './api';
import { RefreshingWidget } from './refreshing';

const ROCKET =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><path class="jp-icon3" fill="#616161" ' +
  'd="M12 2c3.5 1.6 5.5 5 5.5 9 0 1.3-.2 2.6-.6 3.8l2.1 2.6-3 2.6-2-2.4h-4l-2 2.4-3-2.6 2.1-2.6A11.9 11.9 0 0 1 6.5 11' +
  'c0-4 2-7.4 5.5-9zm0 6.5a2 2 0 1 0 0 4 2 2 0 0 0 0-4zM10 20h4l-2 2.5z"/></svg>';

export const rocketIcon = new LabIcon({
  name: 'mlops-lab:rocket',
  svgstr: ROCKET
});

/** One firing in words: "drift fired on churn-svc: 2 (threshold 0, over 1h)". */
function firingText(name: string, f: NonNullable<NonNullable<IDeployment['alerts']>['latest']>): string {
  const value = f.value === null ? 'no value' : Number(f.value.toPrecision(4)).toString();
  return `${f.rule.kind} fired on ${name}: ${value} (threshold ${f.rule.threshold}, over ${f.rule.window})`;
}

/** The alert badge of a deployment with rules firing now, else nothing. */
function alerted(d: IDeployment): HTMLElement | null {
  const a = d.alerts;
  if (!a || a.count === 0 || !a.latest) {
    return null;
  }
  return h('span', {
    class: 'mlops-lab-badge mlops-lab-alert',
    'data-test-id': 'mlops-alerts',
    title: `latest: ${firingText(d.name, a.latest)} (mlops-lab check ${d.name})`
  }, `⚠ ${a.count} alert${a.count === 1 ? '' : 's'}`);
}

type Attrs = { [key: string]: string };

/** States in which a deployment offers Restart (its supervisor or servers are not serving). */
const DOWN = ['crashed', 'stopped', 'unhealthy'];

/** A DOM element with attributes (``data-test-id``, ``class``, ...) and children. */
function h(
  tag: string,
  attrs: Attrs = {},
  ...children: (Node | string | null)[]
): HTMLElement {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    el.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null) {
      el.append(child);
    }
  }
  return el;
}

function button(
  label: string,
  testId: string,
  title: string,
  onClick: () => void
): HTMLButtonElement {
  const b = h(
    'button',
    { class: 'mlops-lab-action', 'data-test-id': testId, title },
    label
  ) as HTMLButtonElement;
  b.addEventListener('click', event => {
    event.stopPropagation();
    onClick();
  });
  return b;
}

export interface ISidebarOptions {
  notebooks: INotebookTracker | null;
  refreshSeconds: number;
  /** Opens the kernel-free monitoring panel of a deployment in the main area. */
  openMonitor?: (deployment: string) => void;
}

export class MlopsSidebar extends RefreshingWidget {
  constructor(options: ISidebarOptions) {
    super(options.refreshSeconds);
    this.id = 'mlops-lab-sidebar';
    this.addClass('mlops-lab-sidebar');
    this.title.icon = rocketIcon;
    this.title.caption = 'mlops_lab: models and deployments';
    this._notebooks = options.notebooks;
    this._openMonitor = options.openMonitor ?? null;
    this._message = h('div', { class: 'mlops-lab-message', 'data-test-id': 'mlops-message' });
    this._models = h('div', { class: 'mlops-lab-list', 'data-test-id': 'mlops-models' });
    this._deployments = h('div', { class: 'mlops-lab-list', 'data-test-id': 'mlops-deployments' });
    const refresh = button('↻', 'mlops-refresh', 'Refresh now', () => void this.refresh());
    this.node.append(
      h('header', { class: 'mlops-lab-header' }, h('h2', {}, 'mlops_lab'), refresh),
      this._message,
      h('h3', {}, 'Deployments'),
      this._deployments,
      h('h3', {}, 'Models'),
      this._models
    );
    void this.refresh();
  }

  /** Fetch models and deployments and redraw; errors go to the message line. */
  async refresh(): Promise<void> {
    try {
      const [models, deployments] = await Promise.all([listModels(), listDeployments()]);
      this._renderDeployments(deployments);
      this._renderModels(models);
      this.node.dataset.loaded = 'true';
      if (this._message.dataset.kind === 'error') {
        this._say('');
      }
    } catch (error) {
      this._say(`Cannot load mlops_lab: ${(error as Error).message}`, true);
    }
  }

  private _say(text: string, error = false): void {
    this._message.textContent = text;
    this._message.dataset.kind = error ? 'error' : 'info';
  }

  private _renderModels(models: IRegisteredModel[]): void {
    const open = new Set(
      Array.from(this._models.querySelectorAll('details[open]')).map(d => (d as HTMLElement).dataset.name)
    );
    this._models.replaceChildren();
    if (models.length === 0) {
      this._models.append(
        h('p', { class: 'mlops-lab-empty', 'data-test-id': 'mlops-models-empty' },
          'No models yet: in a notebook, run ',
          h('code', {}, '%load_ext mlops_lab'), ' then ',
          h('code', {}, '%register_model clf --name NAME'), '.')
      );
      return;
    }
    for (const m of models) {
      const aliases = Object.entries(m.aliases).map(([a, v]) => `@${a}→${v}`).join(' ');
      const versions = h('div', { class: 'mlops-lab-versions' });
      const details = h(
        'details',
        { class: 'mlops-lab-model', 'data-test-id': `mlops-model-${m.name}`, 'data-name': m.name },
        h('summary', {},
          h('span', { class: 'mlops-lab-name' }, m.name),
          h('span', { class: 'mlops-lab-dim' }, ` v${m.latest_version ?? '-'} · ${m.versions} version${m.versions === 1 ? '' : 's'} `),
          aliases ? h('span', { class: 'mlops-lab-alias' }, aliases) : null),
        versions
      ) as HTMLDetailsElement;
      details.addEventListener('toggle', () => {
        if (details.open) {
          void this._loadVersions(m.name, versions);
        }
      });
      if (open.has(m.name)) {
        details.open = true;
      }
      this._models.append(details);
    }
  }

  private async _loadVersions(name: string, into: HTMLElement): Promise<void> {
    try {
      const model = await getModel(name);
      into.replaceChildren(
        ...model.model_versions.map(v =>
          h('div', { class: 'mlops-lab-version', 'data-test-id': `mlops-version-${v.ref}` },
            h('span', { class: 'mlops-lab-name' }, v.ref),
            v.aliases.length ? h('span', { class: 'mlops-lab-alias' }, ' ' + v.aliases.map(a => '@' + a).join(' ')) : null,
            Object.keys(v.tags).length
              ? h('div', { class: 'mlops-lab-dim' }, Object.entries(v.tags).map(([k, x]) => `${k}=${x}`).join(', '))
              : null,
            v.deployments.length ? h('div', { class: 'mlops-lab-dim' }, 'deployed in ' + v.deployments.join(', ')) : null,
            h('div', { class: 'mlops-lab-actions' },
              h('a', {
                class: 'mlops-lab-action',
                'data-test-id': 'mlops-card',
                href: URLExt.join(PageConfig.getBaseUrl(), 'mlops-lab', 'api', 'models', encodeURIComponent(name),
                  String(v.version), 'card'),
                target: '_blank',
                rel: 'noopener',
                title: 'Open the model card of this version in a new tab'
              }, 'Model card')))
        )
      );
    } catch (error) {
      into.replaceChildren(h('p', { class: 'mlops-lab-error' }, (error as Error).message));
    }
  }

  private _renderDeployments(deployments: IDeployment[]): void {
    this._notifyFirings(deployments);
    this._deployments.replaceChildren();
    if (deployments.length === 0) {
      this._deployments.append(
        h('p', { class: 'mlops-lab-empty', 'data-test-id': 'mlops-deployments-empty' },
          'No deployments yet: run ', h('code', {}, '%deploy NAME:VERSION'), ' in a notebook.')
      );
      return;
    }
    for (const d of deployments) {
      const serving = d.models.filter(m => !m.shadow).length;
      const served = d.models
        .map(m => `${m.name}:${m.version}` + (m.shadow ? ` (shadow of ${Math.round(m.shadow * 100)}%)`
          : serving > 1 && m.traffic !== undefined ? ` (${m.traffic}%)` : ''))
        .join(', ');
      const s = d.summary;
      const rate = s
        ? `${s.requests_per_minute} req/min` +
          (s.latency_p50_ms !== null ? ` · p50 ${s.latency_p50_ms} ms` : '') +
          (s.errors ? ` · ${s.errors} errors` : '') + ` (last ${s.window})`
        : '';
      this._deployments.append(
        h('div', { class: 'mlops-lab-deployment', 'data-test-id': `mlops-deployment-${d.name}` },
          h('div', { class: 'mlops-lab-row' },
            h('span', { class: 'mlops-lab-name' }, d.name),
            h('span', { class: 'mlops-lab-badges' },
              alerted(d),
              h('span', {
                class: `mlops-lab-badge mlops-lab-state-${d.status}`,
                'data-test-id': 'mlops-status',
                title: d.status_reason || d.status
              }, d.status))),
          h('div', { class: 'mlops-lab-dim', 'data-test-id': 'mlops-served' }, `${served} · revision ${d.revision} · ${d.target}`),
          rate ? h('div', { class: 'mlops-lab-dim', 'data-test-id': 'mlops-rate' }, rate) : null,
          h('div', { class: 'mlops-lab-actions' },
            button('Copy URL', 'mlops-copy-url', 'Copy the scoring URL (through this Jupyter server)', () => this._copyUrl(d)),
            button('Docs', 'mlops-open-docs', "Open the endpoint's API docs", () => this._openDocs(d)),
            this._openMonitor
              ? button('Monitor', 'mlops-open-monitor', 'Open the monitoring chart and drift table (no kernel needed)', () => this._openMonitor?.(d.name))
              : null,
            button('%monitor', 'mlops-insert-monitor', 'Insert a %monitor cell into the active notebook', () => this._insertMonitor(d)),
            button('Roll back', 'mlops-rollback', 'Serve the previous revision again', () => void this._rollback(d)),
            DOWN.includes(d.status)
              ? button('Restart', 'mlops-restart', 'Start the current revision again at the same address', () => void this._restart(d))
              : null,
            button('Delete', 'mlops-delete', 'Stop and delete this deployment', () => void this._delete(d))))
      );
    }
  }

  /** A notification for each firing not seen yet since this page loaded; when its rule
   * resolves, that notification gives way to one that says so (closed a few seconds later). */
  private _notifyFirings(deployments: IDeployment[]): void {
    for (const d of deployments) {
      const latest = d.alerts?.latest;
      if (latest && latest.id > (this._seenFiring.get(d.name) ?? 0)) {
        this._seenFiring.set(d.name, latest.id);
        const id = Notification.warning(`mlops_lab: ${firingText(d.name, latest)}`, { autoClose: false });
        this._shownFiring.set(`${d.name} ${JSON.stringify(latest.rule)}`, id);
      }
      for (const r of d.alerts?.resolved ?? []) {
        const key = `${d.name} ${JSON.stringify(r.rule)}`;
        const id = this._shownFiring.get(key);
        if (id !== undefined) {
          // a new notification, not Notification.update: an updated one keeps its first type's colour
          this._shownFiring.delete(key);
          Notification.dismiss(id);
          Notification.success(
            `mlops_lab: ${r.rule.kind} on ${d.name} resolved (threshold ${r.rule.threshold}, over ${r.rule.window})`,
            { autoClose: 8000 }
          );
        }
      }
    }
  }

  /** The proxied address of a route of a deployment, as the browser reaches it. */
  private _proxied(d: IDeployment, route: string): string {
    const base = d.proxy_url.startsWith('/') ? window.location.origin + d.proxy_url : URLExt.join(PageConfig.getBaseUrl(), d.proxy_url);
    return base + route;
  }

  private _copyUrl(d: IDeployment): void {
    const url = this._proxied(d, 'score');
    Clipboard.copyToSystem(url);
    this.node.dataset.copied = url;
    this._say(`Copied ${url}`);
  }

  private _openDocs(d: IDeployment): void {
    window.open(this._proxied(d, 'docs'), '_blank', 'noopener');
  }

  private _insertMonitor(d: IDeployment): void {
    const panel = this._notebooks?.currentWidget;
    if (!panel) {
      this._say('Open a notebook first: the %monitor cell goes into the active notebook.', true);
      return;
    }
    const notebook = panel.content;
    const loaded = panel.model?.sharedModel.cells.some(c => c.getSource().includes('load_ext mlops_lab'));
    NotebookActions.insertBelow(notebook);
    const source = (loaded ? '' : '%load_ext mlops_lab\n') + `%monitor ${d.name} --since 1h`;
    notebook.activeCell?.model.sharedModel.setSource(source);
    this._say(`Inserted a %monitor cell for ${d.name} into ${panel.title.label}.`);
  }

  private async _rollback(d: IDeployment): Promise<void> {
    this._say(`Rolling back ${d.name}…`);
    try {
      const after = await rollback(d.name);
      this._say(`${d.name} serves revision ${after.revision}: ${after.models.map(m => `${m.name}:${m.version}`).join(', ')}`);
    } catch (error) {
      this._say(`Roll back ${d.name}: ${(error as Error).message}`, true);
    }
    await this.refresh();
  }

  private async _restart(d: IDeployment): Promise<void> {
    this._say(`Restarting ${d.name}…`);
    try {
      const after = await restart(d.name);
      this._say(`${d.name} serves revision ${after.revision} again at ${after.url}`);
    } catch (error) {
      this._say(`Restart ${d.name}: ${(error as Error).message}`, true);
    }
    await this.refresh();
  }

  private async _delete(d: IDeployment): Promise<void> {
    const answer = await showDialog({
      title: `Delete deployment ${d.name}?`,
      body: 'It stops serving, and its model versions can be deleted again. Collected data stays.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!answer.button.accept) {
      return;
    }
    this._say(`Deleting ${d.name}…`);
    try {
      await deleteDeployment(d.name);
      this._say(`Deleted ${d.name}.`);
    } catch (error) {
      this._say(`Delete ${d.name}: ${(error as Error).message}`, true);
    }
    await this.refresh();
  }

  private _openMonitor: ((deployment: string) => void) | null;
  private _notebooks: INotebookTracker | null;
  private _message: HTMLElement;
  private _models: HTMLElement;
  private _deployments: HTMLElement;
  private _seenFiring = new Map<string, number>();
  /** The notification shown for each firing rule (deployment and rule as a key). */
  private _shownFiring = new Map<string, string>();
}
