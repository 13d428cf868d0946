/**
 * What every DESP panel and dialog shows about an action: one message (an error naming the offending field, or
 * information), and a "working…" note while a request runs. Shared by the Data and Traces sidebars and the
 * "Publish as workflow" dialog.
 */
import React from 'react';

import { ApiError, describeError } from './api';

/** A message to show: an error (with the API's field, if any) or information. */
export interface IMessage {
  kind: 'error' | 'info';
  text: string;
  field?: string | null;
}

/** The message as a block (role alert for errors, status otherwise), or nothing. */
export function Message(props: { message: IMessage | null; testid: string }): JSX.Element | null {
  const { message, testid } = props;
  if (!message) {
    return null;
  }
  return (
    <div
      className={`desp-message desp-message-${message.kind}`}
      data-testid={testid}
      data-field={message.field ?? undefined}
      role={message.kind === 'error' ? 'alert' : 'status'}
    >
      {message.text}
    </div>
  );
}

/** The message for any error thrown by requestAPI (or anything else). */
export function errorMessage(error: unknown): IMessage {
  return { kind: 'error', text: describeError(error), field: error instanceof ApiError ? error.field : null };
}

/** "working…" while `busy`, else nothing. */
export function Busy(props: { busy: boolean; label?: string; testid?: string }): JSX.Element | null {
  return props.busy ? (
    <span className="desp-busy" data-testid={props.testid} role="status">
      {props.label ?? 'working…'}
    </span>
  ) : null;
}
