/**
 * The DESP REST API of the user's Jupyter server (`{baseUrl}desp/api/…`, the desp_lab server extension),
 * called the JupyterLab way: ServerConnection.makeRequest adds the XSRF token and the server's auth.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** An error of the DESP API (`{"message", "field"}`) or of the connection to the Jupyter server. */
export class ApiError extends Error {
  readonly status: number;
  readonly field: string | null;

  constructor(message: string, status: number, field: string | null = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.field = field;
  }
}

export interface ICollection {
  id: string;
  title: string | null;
  description: string | null;
  orderable: boolean;
}

export interface IAssetLink {
  name: string;
  href: string;
  roles?: string[] | null;
  type?: string | null;
}

export interface IItemSummary {
  id: string;
  collection: string;
  datetime: string | null;
  start_datetime: string | null;
  end_datetime: string | null;
  bbox: number[] | null;
  geometry: IGeometry | null;
  thumbnail: string | null;
  /** Asset names (the contract); entries with an href are accepted too (copy-to-cache needs an href). */
  assets: Array<string | IAssetLink>;
  /** Optional: name → href of the item's assets, when the server gives them. */
  asset_hrefs?: { [name: string]: string } | null;
  order_status: string | null;
  code: string;
}

export interface IGeometry {
  type: string;
  coordinates?: unknown;
  geometries?: IGeometry[];
}

export interface ISearchPage {
  items: IItemSummary[];
  matched: number | null;
  page: number;
  next_page: number | null;
}

export interface ICacheEntry {
  name: string;
  path: string;
  type: 'file' | 'directory';
  size: number | null;
  expires: string | null;
}

export interface ICacheListing {
  path: string;
  entries: ICacheEntry[];
  usage: { used: number; quota: number };
}

export interface ICacheRequest {
  id: string;
  status: 'running' | 'done' | 'failed' | string;
  done_bytes: number;
  total_bytes: number | null;
  message: string | null;
  name?: string | null;
}

/** Query parameters without the empty ones, as `?a=1&b=2` (or ''). */
export function queryString(params: { [key: string]: string | number | null | undefined }): string {
  const kept: { [key: string]: string } = {};
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') {
      kept[key] = String(value);
    }
  }
  return Object.keys(kept).length ? URLExt.objectToQueryString(kept) : '';
}

/**
 * Call `desp/api/<endPoint>` and return its JSON. Any non-2xx answer becomes an ApiError carrying the
 * API's message and field; a network failure becomes an ApiError with status 0.
 */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'desp/api', endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ApiError(`The Jupyter server did not answer (${reason}).`, 0);
  }
  const text = await response.text();
  let data: any = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const apiMessage = data && typeof data.message === 'string' ? data.message : null;
    const field = data && typeof data.field === 'string' ? data.field : null;
    const message =
      apiMessage ??
      (response.status === 404
        ? 'The DESP API is not available in this server (is the desp_lab server extension enabled?).'
        : `The DESP API answered ${response.status} ${response.statusText}.`);
    throw new ApiError(message, response.status, field);
  }
  return data as T;
}

/** Text to show a person for any error thrown by requestAPI (or anything else). */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 400 && error.field) {
      const prefix = `Invalid ${error.field}`;
      return error.message.toLowerCase().startsWith(prefix.toLowerCase())
        ? error.message
        : `${prefix}: ${error.message}`;
    }
    return error.message;
  }
  return error instanceof Error ? error.message : String(error);
}

// ------------------------------------------------------------------------------------------------ accounting

/** GET accounting/status: the user's DCU account, this server's profile and price, this session's cost so far. */
export interface IAccountingStatus {
  user: string | null;
  mode: 'advance' | 'arrears' | string | null;
  /** Amounts are strings with 3 decimals ("97.250"), as the accounting API gives them. */
  balance: string | null;
  available: string | null;
  monthly_quota: string | null;
  used_this_month: string | null;
  profile: string | null;
  dcu_per_hour: string | null;
  session: string | null;
  session_cost: string | null;
  /** Seconds between two refreshes of the status bar (the server's `status_refresh_seconds`). */
  refresh_seconds: number;
}

// ------------------------------------------------------------------------------------------------ traces

export interface ITraceProduct {
  name: string;
  size: number | null;
  hash: string;
  contents?: Array<{ path: string; hash: string }>;
  inputs?: Array<{ name: string; hash: string }>;
}

/** A trace, as the trace service stores it (id, timestamp and origin once registered). */
export interface ITrace {
  id?: string | null;
  timestamp?: string | null;
  origin?: string | null;
  event: string;
  hash_algorithm: string;
  product: ITraceProduct;
  signature?: unknown;
}

/** POST traces/generate. */
export interface ITraceAnswer {
  path: string;
  trace: ITrace;
  sent: boolean;
  id: string | null;
}

/** POST traces/verify: `ok`, the registered (`expected`) and recomputed (`actual`) hashes, the members that differ. */
export interface IVerifyAnswer {
  path: string;
  ok: boolean;
  expected: string | null;
  actual: string | null;
  changed?: string[] | null;
  missing?: string[] | null;
  added?: string[] | null;
  message?: string | null;
  trace?: ITrace | null;
}

/** GET traces/search. */
export interface ITraceSearch {
  traces: ITrace[];
}
