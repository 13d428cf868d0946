/**
 * The DCU balance in JupyterLab's status bar: "DCU 97.250 · session 0.750" (what the user may still spend, and
 * what this server's session has cost so far), refreshed every `refresh_seconds` (the server's setting), with the
 * account's mode, the profile and its price in the tooltip. Hidden when the server has no accounting configured.
 */
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { ApiError, describeError, IAccountingStatus, requestAPI } from './api';

/** Refresh period until the server has said its own (and after an error). */
const DEFAULT_REFRESH_SECONDS = 30;

type State = 'loading' | 'ok' | 'error' | 'unconfigured';

/** The status bar's text for a status: available DCUs, and the session's cost when there is a session. */
export function balanceText(status: IAccountingStatus): string {
  const available = status.available ?? status.balance ?? '?';
  return status.session_cost !== null && status.session_cost !== undefined
    ? `DCU ${available} · session ${status.session_cost}`
    : `DCU ${available}`;
}

/** The tooltip: account, mode, amounts, profile and price, session. */
export function balanceTooltip(status: IAccountingStatus, refreshed: Date): string {
  const lines = [`DESP account ${status.user ?? ''}`.trim()];
  if (status.mode === 'arrears') {
    lines.push(
      'Mode: arrears (monthly quota)',
      `Monthly quota: ${status.monthly_quota ?? '?'} DCU, used this month: ${status.used_this_month ?? '?'} DCU`,
      `Available: ${status.available ?? '?'} DCU`
    );
  } else {
    lines.push(`Mode: ${status.mode === 'advance' ? 'advance payment (balance)' : status.mode ?? '?'}`);
    lines.push(`Balance: ${status.balance ?? '?'} DCU`);
  }
  if (status.profile || status.dcu_per_hour) {
    lines.push(
      `Profile: ${status.profile ?? '?'}${status.dcu_per_hour ? `, price ${status.dcu_per_hour} DCU per hour` : ''}`
    );
  }
  if (status.session) {
    lines.push(`This session: ${status.session_cost ?? '0.000'} DCU so far (${status.session})`);
  }
  lines.push(`Updated ${refreshed.toLocaleTimeString()} (every ${status.refresh_seconds} s; click to update now)`);
  return lines.join('\n');
}

/** The status bar item (a plain Lumino widget; registered with IStatusBar in index.ts). */
export class BalanceStatus extends Widget {
  private _state: State = 'loading';
  private _timer: number | null = null;
  private _refreshSeconds = DEFAULT_REFRESH_SECONDS;
  private readonly _stateChanged = new Signal<this, void>(this);
  private readonly _text: HTMLSpanElement;

  constructor() {
    super();
    this.id = 'desp-balance-status';
    this.addClass('desp-balance-status');
    this._text = document.createElement('span');
    this._text.className = 'jp-StatusBar-TextItem desp-balance-text';
    this._text.textContent = 'DCU …';
    this.node.appendChild(this._text);
    this.node.dataset.testid = 'desp-balance-status';
    this.node.dataset.state = this._state;
    this.node.title = 'DESP DCU balance: loading…';
    this.node.addEventListener('click', () => void this.refresh());
    void this.refresh();
  }

  /** Emitted when the item appears or hides (the status bar asks `isActive`). */
  get activeStateChanged(): ISignal<this, void> {
    return this._stateChanged;
  }

  /** False once the server said accounting is not configured: the status bar then hides the item. */
  get isActive(): boolean {
    return this._state !== 'unconfigured';
  }

  /** Ask the server now, show the answer, and schedule the next refresh (none when accounting is not configured). */
  async refresh(): Promise<void> {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
    const wasActive = this.isActive;
    try {
      const status = await requestAPI<IAccountingStatus>('accounting/status');
      this._refreshSeconds = status.refresh_seconds > 0 ? status.refresh_seconds : DEFAULT_REFRESH_SECONDS;
      this._show(status);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404 && /not configured/i.test(error.message)) {
        this._setState('unconfigured');
        this.node.title = error.message;
      } else {
        this._setState('error');
        this._text.textContent = 'DCU ?';
        this.node.title = `DESP DCU balance not available: ${describeError(error)}`;
      }
    }
    if (wasActive !== this.isActive) {
      this._stateChanged.emit();
    }
    if (this.isActive && !this.isDisposed) {
      this._timer = window.setTimeout(() => void this.refresh(), this._refreshSeconds * 1000);
    }
  }

  dispose(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
    super.dispose();
  }

  private _show(status: IAccountingStatus): void {
    this._setState('ok');
    this._text.textContent = balanceText(status);
    this.node.title = balanceTooltip(status, new Date());
    const available = Number(status.available ?? status.balance);
    this.node.classList.toggle('desp-balance-low', Number.isFinite(available) && available <= 0);
    this.node.dataset.available = status.available ?? '';
    this.node.dataset.balance = status.balance ?? '';
    this.node.dataset.sessionCost = status.session_cost ?? '';
    this.node.dataset.mode = status.mode ?? '';
  }

  private _setState(state: State): void {
    this._state = state;
    this.node.dataset.state = state;
  }
}
