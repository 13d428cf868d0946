/**
 * The "DESP Traces" sidebar: trace a file or folder (Zarr store) of the server (optionally registering the trace
 * with the trace service), verify it against its registered trace (OK, or the mismatch and which members differ),
 * and search traces by hash. Commands "Trace this file" / "Verify this file" (file browser context menu, palette)
 * drive the same panel. Everything goes through the desp_lab REST API (see api.ts).
 */
import React, { useCallback, useEffect, useState } from 'react';

import { ReactWidget } from '@jupyterlab/ui-components';
import { ISignal, Signal } from '@lumino/signaling';

import { ITrace, ITraceAnswer, ITraceSearch, IVerifyAnswer, queryString, requestAPI } from './api';
import { Busy, errorMessage, IMessage, Message } from './message';

export const ALGORITHMS = ['BLAKE3', 'SHA256', 'SHA3'];

/** What a command asks the panel to do. */
export interface ITraceRequest {
  action: 'trace' | 'verify';
  path: string;
}

type Result = { kind: 'trace'; answer: ITraceAnswer } | { kind: 'verify'; answer: IVerifyAnswer };

function MemberList(props: { title: string; paths: string[] | null | undefined; testid: string }): JSX.Element | null {
  const paths = props.paths ?? [];
  if (!paths.length) {
    return null;
  }
  return (
    <div className="desp-trace-members" data-testid={props.testid}>
      <div className="desp-trace-members-title">
        {props.title} ({paths.length})
      </div>
      <ul>
        {paths.map(path => (
          <li key={path} data-testid="desp-trace-member">
            {path}
          </li>
        ))}
      </ul>
    </div>
  );
}

function TraceSummary(props: { trace: ITrace }): JSX.Element {
  const { trace } = props;
  return (
    <dl className="desp-trace-summary">
      <dt>product</dt>
      <dd data-testid="desp-trace-name">{trace.product.name}</dd>
      <dt>{trace.hash_algorithm}</dt>
      <dd className="desp-hash" data-testid="desp-trace-hash">
        {trace.product.hash}
      </dd>
      {trace.product.size !== null && trace.product.size !== undefined && (
        <>
          <dt>size</dt>
          <dd>{trace.product.size} bytes</dd>
        </>
      )}
      {trace.product.contents && trace.product.contents.length > 0 && (
        <>
          <dt>members</dt>
          <dd>{trace.product.contents.length}</dd>
        </>
      )}
      <dt>event</dt>
      <dd>{trace.event}</dd>
      {trace.id && (
        <>
          <dt>id</dt>
          <dd data-testid="desp-trace-id">{trace.id}</dd>
        </>
      )}
      {trace.timestamp && (
        <>
          <dt>registered</dt>
          <dd>
            {trace.timestamp}
            {trace.origin ? ` by ${trace.origin}` : ''}
          </dd>
        </>
      )}
    </dl>
  );
}

function ResultView(props: { result: Result }): JSX.Element {
  const { result } = props;
  if (result.kind === 'trace') {
    const { answer } = result;
    return (
      <div className="desp-trace-result" data-testid="desp-trace-result" data-kind="trace" data-sent={String(answer.sent)}>
        <div className="desp-trace-result-head">
          Traced <code>{answer.path}</code>
          {answer.sent ? ' and registered with the trace service.' : ' (not registered).'}
        </div>
        <TraceSummary trace={answer.trace} />
      </div>
    );
  }
  const { answer } = result;
  return (
    <div
      className={`desp-trace-result desp-verify-${answer.ok ? 'ok' : 'mismatch'}`}
      data-testid="desp-trace-result"
      data-kind="verify"
      data-ok={String(answer.ok)}
    >
      <div className="desp-verify-verdict" data-testid="desp-verify-verdict" title={answer.message ?? undefined}>
        {answer.ok
          ? `OK: ${answer.path} matches its registered trace.`
          : `MISMATCH: ${answer.path} differs from its registered trace.`}
      </div>
      <dl className="desp-trace-summary">
        <dt>registered</dt>
        <dd className="desp-hash" data-testid="desp-verify-expected">
          {answer.expected ?? '—'}
        </dd>
        <dt>now</dt>
        <dd className="desp-hash" data-testid="desp-verify-actual">
          {answer.actual ?? '—'}
        </dd>
      </dl>
      <MemberList title="Changed" paths={answer.changed} testid="desp-verify-changed" />
      <MemberList title="Missing" paths={answer.missing} testid="desp-verify-missing" />
      <MemberList title="Added" paths={answer.added} testid="desp-verify-added" />
    </div>
  );
}

function SearchSection(): JSX.Element {
  const [hash, setHash] = useState('');
  const [traces, setTraces] = useState<ITrace[] | null>(null);
  const [message, setMessage] = useState<IMessage | null>(null);
  const [busy, setBusy] = useState(false);

  const search = async () => {
    setBusy(true);
    setMessage(null);
    try {
      const answer = await requestAPI<ITraceSearch>(`traces/search${queryString({ hash: hash.trim() })}`);
      setTraces(answer.traces);
    } catch (error) {
      setTraces(null);
      setMessage(errorMessage(error));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="desp-section desp-trace-search" data-testid="desp-trace-search-section">
      <h3>Search by hash</h3>
      <form
        onSubmit={event => {
          event.preventDefault();
          void search();
        }}
      >
        <input
          className="desp-input"
          data-testid="desp-trace-search-hash"
          aria-label="product hash"
          aria-invalid={message?.field === 'hash' ? true : undefined}
          placeholder="hex hash (64 characters)"
          value={hash}
          onChange={event => setHash(event.target.value)}
        />
        <button type="submit" className="jp-mod-styled desp-button" data-testid="desp-trace-search-button" disabled={busy}>
          {busy ? 'Searching…' : 'Search'}
        </button>
      </form>
      <Message message={message} testid="desp-trace-search-message" />
      {traces && (
        <ul className="desp-trace-list" data-testid="desp-trace-search-results">
          {traces.length === 0 && (
            <li className="desp-empty" data-testid="desp-trace-search-empty">
              No trace has this hash.
            </li>
          )}
          {traces.map((trace, index) => (
            <li key={trace.id ?? index} data-testid="desp-trace-search-result" data-trace-id={trace.id ?? ''}>
              <TraceSummary trace={trace} />
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function TracesView(props: { panel: TracesPanel }): JSX.Element {
  const [path, setPath] = useState('');
  const [algorithm, setAlgorithm] = useState(ALGORITHMS[0]);
  const [send, setSend] = useState(true);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<Result | null>(null);
  const [message, setMessage] = useState<IMessage | null>(null);

  const run = useCallback(
    async (action: 'trace' | 'verify', target: string) => {
      setBusy(true);
      setMessage(null);
      setResult(null);
      try {
        if (action === 'trace') {
          const answer = await requestAPI<ITraceAnswer>('traces/generate', {
            method: 'POST',
            body: JSON.stringify({ path: target, algorithm, send })
          });
          setResult({ kind: 'trace', answer });
        } else {
          const answer = await requestAPI<IVerifyAnswer>('traces/verify', {
            method: 'POST',
            body: JSON.stringify({ path: target })
          });
          setResult({ kind: 'verify', answer });
        }
      } catch (error) {
        setMessage(errorMessage(error));
      } finally {
        setBusy(false);
      }
    },
    [algorithm, send]
  );

  useEffect(() => {
    const { panel } = props;
    const take = () => {
      const request = panel.takePending();
      if (request) {
        setPath(request.path);
        void run(request.action, request.path);
      }
    };
    take(); // a command may have asked before the panel was first shown
    panel.requested.connect(take);
    return () => {
      panel.requested.disconnect(take);
    };
  }, [props.panel, run]);

  return (
    <div className="desp-panel-body">
      <header className="desp-header">
        <h2>DESP Traces</h2>
      </header>
      <section className="desp-section desp-trace-form" data-testid="desp-trace-form">
        <label className="desp-label">
          File or folder
          <input
            className="desp-input"
            data-testid="desp-trace-path"
            aria-label="path of the file or folder, relative to your home folder"
            aria-invalid={message?.field === 'path' ? true : undefined}
            placeholder="e.g. results/output.nc"
            value={path}
            onChange={event => setPath(event.target.value)}
          />
        </label>
        <label className="desp-label">
          Algorithm
          <select
            className="desp-input"
            data-testid="desp-trace-algorithm"
            value={algorithm}
            onChange={event => setAlgorithm(event.target.value)}
          >
            {ALGORITHMS.map(name => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </label>
        <label className="desp-checkbox">
          <input
            type="checkbox"
            data-testid="desp-trace-send"
            checked={send}
            onChange={event => setSend(event.target.checked)}
          />
          register the trace with the trace service
        </label>
        <div className="desp-trace-actions">
          <button
            className="jp-mod-styled jp-mod-accept desp-button"
            data-testid="desp-trace-button"
            disabled={busy}
            onClick={() => void run('trace', path)}
          >
            Trace
          </button>
          <button
            className="jp-mod-styled desp-button"
            data-testid="desp-verify-button"
            disabled={busy}
            onClick={() => void run('verify', path)}
          >
            Verify
          </button>
          <Busy busy={busy} />
        </div>
        <Message message={message} testid="desp-trace-message" />
        {result && <ResultView result={result} />}
      </section>
      <SearchSection />
    </div>
  );
}

/** The Lumino widget placed in the left sidebar. */
export class TracesPanel extends ReactWidget {
  private readonly _requested = new Signal<TracesPanel, void>(this);
  private _pending: ITraceRequest | null = null;

  constructor() {
    super();
    this.id = 'desp-traces-panel';
    this.addClass('desp-data-panel');
    this.addClass('desp-traces-panel');
    this.node.dataset.testid = 'desp-traces-panel';
  }

  /** Trace (`action` "trace", with the panel's algorithm and "register" choice) or verify `path`, in the panel. */
  request(action: 'trace' | 'verify', path: string): void {
    this._pending = { action, path };
    this._requested.emit();
  }

  /** Emitted when a command asks for something (the view then takes it with `takePending`). */
  get requested(): ISignal<TracesPanel, void> {
    return this._requested;
  }

  /** The request not yet run (once). */
  takePending(): ITraceRequest | null {
    const pending = this._pending;
    this._pending = null;
    return pending;
  }

  render(): JSX.Element {
    return <TracesView panel={this} />;
  }
}
