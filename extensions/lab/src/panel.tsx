/**
 * The "DESP Data" sidebar: catalogue search with results (footprint, thumbnail, insert code, copy to my cache)
 * and a browser of the user's cache area. Everything goes through the desp_lab REST API (see api.ts).
 */
import React, { useCallback, useEffect, useRef, useState } from 'react';

import { fileIcon, folderIcon, ReactWidget } from '@jupyterlab/ui-components';

import {
  ICacheListing,
  ICacheRequest,
  ICollection,
  IItemSummary,
  ISearchPage,
  queryString,
  requestAPI
} from './api';
import {
  copyName,
  copySource,
  datetimeInterval,
  footprintShape,
  humanBytes,
  itemTime,
  retentionLabel
} from './format';
import { errorMessage, IMessage, Message } from './message';

/** What the panel needs from the application: putting code into the active notebook. */
export interface IPanelActions {
  /** Insert `code` as a new cell below the active cell; returns the notebook path, or null if none is open. */
  insertCode(code: string): string | null;
}

export const PAGE_SIZE = 10;
const POLL_MS = 1000;

// ------------------------------------------------------------------------------------------------ search

interface ISearchForm {
  collection: string;
  west: string;
  south: string;
  east: string;
  north: string;
  from: string;
  to: string;
  text: string;
}

const EMPTY_FORM: ISearchForm = {
  collection: '',
  west: '',
  south: '',
  east: '',
  north: '',
  from: '',
  to: '',
  text: ''
};

/** Which form inputs a 400's `field` names (they are marked invalid). */
const FIELD_INPUTS: { [field: string]: Array<keyof ISearchForm> } = {
  collections: ['collection'],
  bbox: ['west', 'south', 'east', 'north'],
  datetime: ['from', 'to'],
  q: ['text']
};

function searchParams(form: ISearchForm, page: number): { [key: string]: string | string[] | number | null } {
  const corners = [form.west, form.south, form.east, form.north].map(value => value.trim());
  return {
    collections: form.collection ? [form.collection] : null,
    // Sent as typed (even incomplete): the server checks it and names the field when it is wrong.
    bbox: corners.some(value => value !== '') ? corners.join(',') : null,
    datetime: datetimeInterval(form.from, form.to),
    q: form.text.trim() || null,
    limit: PAGE_SIZE,
    page
  };
}

function Footprint(props: { item: IItemSummary }): JSX.Element {
  const width = 64;
  const height = 32;
  const shape = footprintShape(props.item, width, height);
  return (
    <svg
      className="desp-footprint"
      data-testid="desp-footprint"
      width={width}
      height={height}
      viewBox={`0 0 ${width} ${height}`}
      role="img"
      aria-label={shape.polygons.length ? 'footprint on a world map' : 'no footprint'}
    >
      <rect className="desp-footprint-world" x={0} y={0} width={width} height={height} />
      <line className="desp-footprint-grid" x1={0} y1={height / 2} x2={width} y2={height / 2} />
      <line className="desp-footprint-grid" x1={width / 2} y1={0} x2={width / 2} y2={height} />
      {shape.polygons.map((points, index) => (
        <polygon key={index} className="desp-footprint-shape" points={points} />
      ))}
      {shape.marker && (
        <circle className="desp-footprint-marker" cx={shape.marker.x} cy={shape.marker.y} r={2.5} />
      )}
    </svg>
  );
}

function Thumbnail(props: { href: string; id: string }): JSX.Element | null {
  const [failed, setFailed] = useState(false);
  if (failed) {
    return (
      <span className="desp-thumbnail-missing" data-testid="desp-thumbnail-missing">
        thumbnail not available
      </span>
    );
  }
  return (
    <img
      className="desp-thumbnail"
      data-testid="desp-thumbnail"
      src={props.href}
      alt={`thumbnail of ${props.id}`}
      loading="lazy"
      onError={() => setFailed(true)}
    />
  );
}

interface ICopyState {
  request: ICacheRequest | null;
  message: IMessage | null;
  busy: boolean;
}

function CopyToCache(props: { item: IItemSummary; onCopied: () => void }): JSX.Element {
  const { item, onCopied } = props;
  const source = copySource(item);
  const [days, setDays] = useState('7');
  const [state, setState] = useState<ICopyState>({ request: null, message: null, busy: false });
  const timer = useRef<number | null>(null);

  useEffect(
    () => () => {
      if (timer.current !== null) {
        window.clearTimeout(timer.current);
      }
    },
    []
  );

  const poll = useCallback(
    (id: string) => {
      timer.current = window.setTimeout(async () => {
        try {
          const request = await requestAPI<ICacheRequest>(`cache/requests/${encodeURIComponent(id)}`);
          const finished = request.status !== 'running';
          setState({
            request,
            busy: !finished,
            message:
              request.status === 'failed'
                ? { kind: 'error', text: request.message || 'The copy failed.' }
                : null
          });
          if (!finished) {
            poll(id);
          } else if (request.status === 'done') {
            onCopied();
          }
        } catch (error) {
          setState(previous => ({ ...previous, busy: false, message: errorMessage(error) }));
        }
      }, POLL_MS);
    },
    [onCopied]
  );

  const copy = async () => {
    if (!source) {
      return;
    }
    const retention = Number(days);
    setState({ request: null, message: null, busy: true });
    try {
      const request = await requestAPI<ICacheRequest>('cache/requests', {
        method: 'POST',
        body: JSON.stringify({
          source: source.href,
          name: copyName(item, source.asset, source.href),
          // Sent as typed when it is not a number, so the server names the field.
          retention_days: days.trim() !== '' && Number.isFinite(retention) ? retention : days
        })
      });
      const finished = request.status !== 'running';
      setState({
        request,
        busy: !finished,
        message:
          request.status === 'failed' ? { kind: 'error', text: request.message || 'The copy failed.' } : null
      });
      if (!finished) {
        poll(request.id);
      } else if (request.status === 'done') {
        onCopied();
      }
    } catch (error) {
      setState({ request: null, busy: false, message: errorMessage(error) });
    }
  };

  const request = state.request;
  const total = request?.total_bytes ?? null;
  return (
    <div className="desp-copy">
      <label className="desp-copy-retention">
        keep
        <input
          type="number"
          min={1}
          step={1}
          value={days}
          data-testid="desp-retention-days"
          aria-label="retention in days"
          aria-invalid={state.message?.field === 'retention_days' ? true : undefined}
          onChange={event => setDays(event.target.value)}
        />
        days
      </label>
      <button
        className="jp-mod-styled desp-button"
        data-testid="desp-copy-to-cache"
        disabled={!source || state.busy}
        title={
          source
            ? `Copy ${source.asset} into my cache area`
            : 'The catalogue gave no download link for this item'
        }
        onClick={copy}
      >
        Copy to my cache
      </button>
      {request && (
        <div className="desp-copy-status" data-testid="desp-copy-status" data-status={request.status}>
          <progress max={total ?? undefined} value={total ? request.done_bytes : undefined} />
          <span>
            {request.status === 'done'
              ? `copied ${humanBytes(request.done_bytes)}`
              : request.status === 'failed'
                ? 'failed'
                : `copying ${humanBytes(request.done_bytes)}${total ? ` of ${humanBytes(total)}` : ''}`}
          </span>
        </div>
      )}
      <Message message={state.message} testid="desp-copy-message" />
    </div>
  );
}

function ResultRow(props: {
  item: IItemSummary;
  onInsert: (item: IItemSummary) => void;
  onCopied: () => void;
}): JSX.Element {
  const { item } = props;
  return (
    <li className="desp-result" data-testid="desp-result" data-item-id={item.id}>
      <div className="desp-result-head">
        <Footprint item={item} />
        <div className="desp-result-text">
          <div className="desp-result-id" data-testid="desp-result-id" title={item.id}>
            {item.id}
          </div>
          <div className="desp-result-time" data-testid="desp-result-time">
            {itemTime(item)}
          </div>
          {item.order_status && (
            <div className="desp-result-order" data-testid="desp-result-order">
              order: {item.order_status}
            </div>
          )}
        </div>
      </div>
      {item.thumbnail && <Thumbnail href={item.thumbnail} id={item.id} />}
      <div className="desp-result-actions">
        <button
          className="jp-mod-styled jp-mod-accept desp-button"
          data-testid="desp-insert-code"
          title="Insert a code cell that opens this item in xarray, below the active cell"
          onClick={() => props.onInsert(item)}
        >
          Insert code
        </button>
      </div>
      <CopyToCache item={item} onCopied={props.onCopied} />
    </li>
  );
}

function SearchSection(props: { actions: IPanelActions; onCopied: () => void }): JSX.Element {
  const [collections, setCollections] = useState<ICollection[]>([]);
  const [form, setForm] = useState<ISearchForm>(EMPTY_FORM);
  const [results, setResults] = useState<ISearchPage | null>(null);
  const [message, setMessage] = useState<IMessage | null>(null);
  const [notice, setNotice] = useState<IMessage | null>(null);
  const [busy, setBusy] = useState(false);
  // The form as it was when the shown results were searched: paging repeats that search.
  const searched = useRef<ISearchForm>(EMPTY_FORM);

  const loadCollections = useCallback(async () => {
    try {
      const answer = await requestAPI<{ collections: ICollection[] }>('collections');
      setCollections(answer.collections);
      setMessage(previous => (previous?.kind === 'error' && !previous.field ? null : previous));
    } catch (error) {
      setMessage(errorMessage(error));
    }
  }, []);

  useEffect(() => {
    void loadCollections();
  }, [loadCollections]);

  const search = async (source: ISearchForm, page: number) => {
    setBusy(true);
    setMessage(null);
    setNotice(null);
    try {
      // POST: a GET would carry the cache-busting timestamp parameter ServerConnection adds to every GET,
      // which the search refuses as an unknown parameter.
      const body = Object.fromEntries(
        Object.entries(searchParams(source, page)).filter(([, value]) => value !== null && value !== '')
      );
      const answer = await requestAPI<ISearchPage>('search', { method: 'POST', body: JSON.stringify(body) });
      searched.current = source;
      setResults(answer);
      if (!collections.length) {
        void loadCollections();
      }
    } catch (error) {
      setMessage(errorMessage(error));
    } finally {
      setBusy(false);
    }
  };

  const insert = (item: IItemSummary) => {
    const path = props.actions.insertCode(item.code);
    setNotice(
      path
        ? { kind: 'info', text: `Inserted code for ${item.id} into ${path}.` }
        : { kind: 'error', text: 'Open a notebook first: the code is inserted below its active cell.' }
    );
  };

  const invalid = (name: keyof ISearchForm) =>
    message?.field && (FIELD_INPUTS[message.field] ?? []).includes(name) ? true : undefined;

  const input = (name: keyof ISearchForm, label: string, type = 'text', placeholder = '') => (
    <input
      type={type}
      className={`desp-input desp-input-${name}`}
      data-testid={`desp-${name === 'collection' ? 'collection' : name === 'text' ? 'text' : ['from', 'to'].includes(name) ? `date-${name}` : `bbox-${name}`}`}
      aria-label={label}
      aria-invalid={invalid(name)}
      placeholder={placeholder}
      value={form[name]}
      onChange={event => setForm({ ...form, [name]: event.target.value })}
      onKeyDown={event => {
        if (event.key === 'Enter') {
          void search(form, 1);
        }
      }}
    />
  );

  return (
    <section className="desp-section desp-search" data-testid="desp-search-section">
      <form
        className="desp-search-form"
        onSubmit={event => {
          event.preventDefault();
          void search(form, 1);
        }}
      >
        <label className="desp-label">
          Collection
          <select
            className="desp-input"
            data-testid="desp-collection"
            aria-invalid={invalid('collection')}
            value={form.collection}
            onChange={event => setForm({ ...form, collection: event.target.value })}
          >
            <option value="">All collections</option>
            {collections.map(collection => (
              <option key={collection.id} value={collection.id} title={collection.description ?? ''}>
                {collection.title ? `${collection.title} (${collection.id})` : collection.id}
                {collection.orderable ? ' — on order' : ''}
              </option>
            ))}
          </select>
        </label>
        <fieldset className="desp-bbox">
          <legend>Bounding box (degrees)</legend>
          {input('west', 'west longitude', 'text', 'west')}
          {input('south', 'south latitude', 'text', 'south')}
          {input('east', 'east longitude', 'text', 'east')}
          {input('north', 'north latitude', 'text', 'north')}
        </fieldset>
        <fieldset className="desp-dates">
          <legend>Dates</legend>
          {input('from', 'from date', 'date')}
          {input('to', 'to date', 'date')}
        </fieldset>
        <label className="desp-label">
          Text
          {input('text', 'free text', 'text', 'e.g. 2t, temperature')}
        </label>
        <button
          type="submit"
          className="jp-mod-styled jp-mod-accept desp-button"
          data-testid="desp-search-button"
          disabled={busy}
        >
          {busy ? 'Searching…' : 'Search'}
        </button>
      </form>
      <Message message={message} testid="desp-search-message" />
      <Message message={notice} testid="desp-notice" />
      {results && (
        <div className="desp-results" data-testid="desp-results">
          <div className="desp-paging">
            <button
              className="jp-mod-styled desp-button"
              data-testid="desp-prev-page"
              disabled={busy || results.page <= 1}
              onClick={() => void search(searched.current, results.page - 1)}
            >
              ‹ Prev
            </button>
            <span className="desp-page-label" data-testid="desp-page-label">
              page {results.page}
              {results.matched !== null ? ` · ${results.matched} matched` : ''}
            </span>
            <button
              className="jp-mod-styled desp-button"
              data-testid="desp-next-page"
              disabled={busy || results.next_page === null}
              onClick={() => results.next_page !== null && void search(searched.current, results.next_page)}
            >
              Next ›
            </button>
          </div>
          {results.items.length === 0 ? (
            <div className="desp-empty" data-testid="desp-no-results">
              No items match this search.
            </div>
          ) : (
            <ul className="desp-result-list">
              {results.items.map(item => (
                <ResultRow key={`${item.collection}/${item.id}`} item={item} onInsert={insert} onCopied={props.onCopied} />
              ))}
            </ul>
          )}
        </div>
      )}
    </section>
  );
}

// ------------------------------------------------------------------------------------------------ cache

function CacheSection(props: { refreshKey: number }): JSX.Element {
  const [path, setPath] = useState('');
  const [listing, setListing] = useState<ICacheListing | null>(null);
  const [message, setMessage] = useState<IMessage | null>(null);
  const [busy, setBusy] = useState(false);

  const load = useCallback(async (target: string) => {
    setBusy(true);
    try {
      const answer = await requestAPI<ICacheListing>(`cache${queryString({ path: target })}`);
      setListing(answer);
      setPath(answer.path ?? target);
      setMessage(null);
    } catch (error) {
      setMessage(errorMessage(error));
    } finally {
      setBusy(false);
    }
  }, []);

  useEffect(() => {
    void load(path);
    // Reload when asked from outside (a copy finished) — not on every path change (load does that).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [props.refreshKey]);

  const parts = path ? path.split('/').filter(Boolean) : [];
  const usage = listing?.usage;
  const fraction = usage && usage.quota > 0 ? Math.min(1, usage.used / usage.quota) : 0;

  return (
    <section className="desp-section desp-cache" data-testid="desp-cache-section">
      {usage && (
        <div className="desp-usage" data-testid="desp-cache-usage" title="space used in my cache area">
          <div className="desp-usage-track">
            <div
              className={`desp-usage-bar${fraction > 0.9 ? ' desp-usage-full' : ''}`}
              data-testid="desp-cache-usage-bar"
              style={{ width: `${(fraction * 100).toFixed(1)}%`, minWidth: usage.used > 0 ? '2px' : undefined }}
            />
          </div>
          <span className="desp-usage-text">
            {humanBytes(usage.used)} of {humanBytes(usage.quota)} used ({usage.used > 0 && fraction < 0.001 ? '< 0.1' : (fraction * 100).toFixed(1)} %)
          </span>
        </div>
      )}
      <div className="desp-cache-path" data-testid="desp-cache-path">
        <button className="desp-link" data-testid="desp-cache-root" onClick={() => void load('')}>
          my cache
        </button>
        {parts.map((part, index) => (
          <React.Fragment key={index}>
            {' / '}
            <button className="desp-link" onClick={() => void load(parts.slice(0, index + 1).join('/'))}>
              {part}
            </button>
          </React.Fragment>
        ))}
      </div>
      <div className="desp-cache-nav">
        <button
          className="jp-mod-styled desp-button"
          data-testid="desp-cache-up"
          disabled={busy || parts.length === 0}
          onClick={() => void load(parts.slice(0, -1).join('/'))}
        >
          ↑ Up
        </button>
        <button
          className="jp-mod-styled desp-button"
          data-testid="desp-cache-refresh"
          disabled={busy}
          onClick={() => void load(path)}
        >
          Refresh
        </button>
      </div>
      <Message message={message} testid="desp-cache-message" />
      {listing && (
        <ul className="desp-cache-list" data-testid="desp-cache-table">
          {listing.entries.length === 0 && (
            <li className="desp-empty" data-testid="desp-cache-empty">
              This folder is empty.
            </li>
          )}
          {listing.entries.map(entry => (
            <li
              key={entry.path}
              className={`desp-cache-entry desp-cache-${entry.type}`}
              data-testid="desp-cache-entry"
              data-path={entry.path}
              data-type={entry.type}
            >
              <div className="desp-cache-name">
                {entry.type === 'directory' ? (
                  <button
                    className="desp-link"
                    data-testid="desp-cache-open"
                    title={`open ${entry.path}`}
                    onClick={() => void load(entry.path)}
                  >
                    <folderIcon.react tag="span" className="desp-cache-icon" />
                    {entry.name}
                  </button>
                ) : (
                  <span title={entry.path}>
                    <fileIcon.react tag="span" className="desp-cache-icon" />
                    {entry.name}
                  </span>
                )}
              </div>
              <div className="desp-cache-meta">
                <span className="desp-cache-size" data-testid="desp-cache-size">
                  {humanBytes(entry.size)}
                </span>
                {' · '}
                <span className="desp-cache-expires" data-testid="desp-cache-expires">
                  {retentionLabel(entry.expires)}
                </span>
              </div>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

// ------------------------------------------------------------------------------------------------ panel

function DataPanelView(props: { actions: IPanelActions }): JSX.Element {
  const [tab, setTab] = useState<'search' | 'cache'>('search');
  const [cacheRefresh, setCacheRefresh] = useState(0);
  const refreshCache = useCallback(() => setCacheRefresh(value => value + 1), []);
  return (
    <div className="desp-panel-body">
      <header className="desp-header">
        <h2>DESP Data</h2>
        <nav className="desp-tabs" role="tablist">
          <button
            role="tab"
            aria-selected={tab === 'search'}
            className={`desp-tab${tab === 'search' ? ' desp-tab-active' : ''}`}
            data-testid="desp-tab-search"
            onClick={() => setTab('search')}
          >
            Catalogue
          </button>
          <button
            role="tab"
            aria-selected={tab === 'cache'}
            className={`desp-tab${tab === 'cache' ? ' desp-tab-active' : ''}`}
            data-testid="desp-tab-cache"
            onClick={() => {
              setTab('cache');
              refreshCache();
            }}
          >
            My cache
          </button>
        </nav>
      </header>
      {/* Both stay mounted so the search results survive a look at the cache. */}
      <div hidden={tab !== 'search'}>
        <SearchSection actions={props.actions} onCopied={refreshCache} />
      </div>
      <div hidden={tab !== 'cache'}>
        <CacheSection refreshKey={cacheRefresh} />
      </div>
    </div>
  );
}

/** The Lumino widget placed in the left sidebar. */
export class DataPanel extends ReactWidget {
  private readonly actions: IPanelActions;

  constructor(actions: IPanelActions) {
    super();
    this.actions = actions;
    this.id = 'desp-data-panel';
    this.addClass('desp-data-panel');
    this.node.dataset.testid = 'desp-data-panel';
  }

  render(): JSX.Element {
    return <DataPanelView actions={this.actions} />;
  }
}
