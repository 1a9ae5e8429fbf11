// Calls to the mlops_lab server extension ({base_url}/mlops-lab/api/...), with Jupyter's auth.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IRegisteredModel {
  name: string;
  description: string;
  latest_version: number | null;
  versions: number;
  aliases: { [alias: string]: number };
  updated_at: number;
}

export interface IModelVersion {
  ref: string;
  version: number;
  aliases: string[];
  tags: { [key: string]: string };
  deployments: string[];
  flavor: string;
  created_at: number;
}

export interface IModelDetail extends IRegisteredModel {
  model_versions: IModelVersion[];
}

export interface IServedModel {
  name: string;
  version: number;
  traffic?: number;
  /** A shadow's share of the requests it gets a copy of (it answers none of them). */
  shadow?: number;
}

export interface ISummary {
  window: string;
  requests: number;
  errors: number;
  requests_per_minute: number;
  latency_p50_ms: number | null;
  latency_p99_ms: number | null;
}

/** One alert rule, as stored. */
export interface IAlertRule {
  kind: string;
  threshold: number;
  window: string;
}

/** A deployment's alerts: its rules firing now (``count``; a rule that resolved is not counted),
 * its rules' firings in the last 24 hours, the latest firing of a rule firing now, and the
 * resolutions of the rules whose latest event is one. */
export interface IAlerts {
  count: number;
  firings: number;
  latest: {
    id: number;
    time: number;
    rule: IAlertRule;
    value: number | null;
  } | null;
  resolved: { id: number; time: number; rule: IAlertRule }[];
}

export interface IDeployment {
  name: string;
  target: string;
  url: string;
  revision: number;
  models: IServedModel[];
  status: string;
  status_reason: string;
  proxy_url: string;
  summary: ISummary | null;
  alerts: IAlerts | null;
}

/** An error of the server extension: its message (and hint) as the server wrote them. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

export async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'mlops-lab', 'api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(`the Jupyter server does not answer (${error})`, 0);
  }
  const text = await response.text();
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message =
      data && data.message
        ? data.message + (data.hint ? ` (${data.hint})` : '')
        : response.status === 404
          ? 'the mlops_lab server extension is not enabled: run `jupyter server extension enable mlops_lab.server` and restart JupyterLab'
          : `HTTP ${response.status}`;
    throw new ApiError(message, response.status);
  }
  return data as T;
}

export const listModels = () =>
  request<{ models: IRegisteredModel[] }>('models').then(r => r.models);
export const getModel = (name: string) =>
  request<IModelDetail>(`models/${encodeURIComponent(name)}`);
export const listDeployments = () =>
  request<{ deployments: IDeployment[] }>('deployments').then(
    r => r.deployments
  );
export const rollback = (name: string) =>
  request<IDeployment>(`deployments/${encodeURIComponent(name)}/rollback`, {
    method: 'POST'
  });
export const restart = (name: string) =>
  request<IDeployment>(`deployments/${encodeURIComponent(name)}/restart`, {
    method: 'POST'
  });
export const deleteDeployment = (name: string) =>
  request<{ deleted: boolean }>(`deployments/${encodeURIComponent(name)}`, {
    method: 'DELETE'
  });

export interface IDriftRow {
  feature: string;
  kind: string;
  psi?: number | null;
  ks_pvalue?: number | null;
  chi2_pvalue?: number | null;
  js_distance?: number | null;
  drifted: boolean;
}

export interface IMonitorView {
  deployment: string;
  since: string;
  spec: any;
  drift: IDriftRow[];
  reference: string | null;
  generated_at: number;
}

export const getMonitor = (name: string, since: string) =>
  request<IMonitorView>(
    `deployments/${encodeURIComponent(name)}/monitor?since=${encodeURIComponent(since)}`
  );
