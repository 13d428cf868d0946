/**
 * "Publish as workflow": send the current notebook (saved first) to the hub's workflows service through the
 * desp_lab server extension (`POST desp/api/workflows/publish`), as a new workflow or a new version of the user's
 * workflow of the same name, then link to the workflow's page (its parameters, runs and schedule).
 */
import React from 'react';

import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';

import { requestAPI } from './api';
import { errorMessage, IMessage, Message } from './message';

export const VISIBILITIES: Array<{ value: string; label: string }> = [
  { value: 'private', label: 'Private: only me' },
  { value: 'group', label: 'Group: members of a group of mine' },
  { value: 'public', label: 'Public: every user of the hub' }
];

/** What the dialog asks. */
export interface IPublishRequest {
  path: string;
  name: string;
  visibility: string;
  group?: string;
  description?: string;
}

/** POST workflows/publish. */
export interface IPublishAnswer {
  workflow: {
    id: number | string;
    name: string;
    owner: string;
    visibility: string;
    latest_version?: { number: number; sha256: string; parameters: Array<{ name: string; type: string }> } | null;
  };
  version: { number?: number; sha256?: string } | null;
  created_workflow: boolean;
  created_version: boolean;
  /** The workflow's page (a path on the hub, e.g. /services/workflows/w/3). */
  url: string;
}

/** The workflow's default name: the notebook's file name without `.ipynb`. */
export function defaultName(path: string): string {
  const file = path.split('/').pop() ?? path;
  return file.replace(/\.ipynb$/i, '');
}

/** What the outcome dialog says about a publication. */
export function publishedText(answer: IPublishAnswer): string {
  const number = answer.version?.number ?? answer.workflow.latest_version?.number;
  const version = number !== undefined ? `version ${number}` : 'a version';
  if (answer.created_workflow) {
    return `Published "${answer.workflow.name}" (${answer.workflow.visibility}), ${version}.`;
  }
  if (answer.created_version) {
    return `Published ${version} of "${answer.workflow.name}".`;
  }
  return `"${answer.workflow.name}" already has this notebook as ${version}: nothing changed.`;
}

export async function publish(request: IPublishRequest): Promise<IPublishAnswer> {
  const body: { [key: string]: string } = { path: request.path, name: request.name, visibility: request.visibility };
  if (request.visibility === 'group' && request.group) {
    body.group = request.group;
  }
  if (request.description) {
    body.description = request.description;
  }
  return requestAPI<IPublishAnswer>('workflows/publish', { method: 'POST', body: JSON.stringify(body) });
}

/** The dialog's form; its values are read from the inputs when the dialog closes. */
class PublishForm extends ReactWidget implements Dialog.IBodyWidget<Omit<IPublishRequest, 'path'>> {
  constructor(private readonly initial: Omit<IPublishRequest, 'path'>) {
    super();
    this.addClass('desp-publish-form');
  }

  private field(name: string): string {
    const input = this.node.querySelector(`[name="${name}"]`) as HTMLInputElement | HTMLSelectElement | null;
    return input ? input.value.trim() : '';
  }

  getValue(): Omit<IPublishRequest, 'path'> {
    return {
      name: this.field('name'),
      visibility: this.field('visibility') || 'private',
      group: this.field('group'),
      description: this.field('description')
    };
  }

  render(): JSX.Element {
    const initial = this.initial;
    return (
      <div className="desp-form">
        <label>
          Name
          <input
            name="name"
            className="jp-mod-styled"
            data-testid="desp-publish-name"
            defaultValue={initial.name}
            maxLength={200}
          />
        </label>
        <label>
          Who may see it and its runs
          <select
            name="visibility"
            className="jp-mod-styled"
            data-testid="desp-publish-visibility"
            defaultValue={initial.visibility}
          >
            {VISIBILITIES.map(option => (
              <option key={option.value} value={option.value}>
                {option.label}
              </option>
            ))}
          </select>
        </label>
        <label>
          Group (for group visibility)
          <input name="group" className="jp-mod-styled" data-testid="desp-publish-group" defaultValue={initial.group} />
        </label>
        <label>
          Description
          <textarea
            name="description"
            className="jp-mod-styled"
            data-testid="desp-publish-description"
            defaultValue={initial.description}
            rows={3}
          />
        </label>
        <p className="desp-hint">
          The cell tagged <code>parameters</code> defines the workflow's typed parameters. The saved notebook is
          published; publishing it again under the same name adds a version.
        </p>
      </div>
    );
  }
}

/** The outcome: a link to the workflow's page, or the error. */
function Outcome(props: { message: IMessage; url: string | null }): JSX.Element {
  return (
    <div className="desp-publish-outcome">
      <Message message={props.message} testid="desp-publish-message" />
      {props.url && (
        <a href={props.url} target="_blank" rel="noopener noreferrer" data-testid="desp-publish-link">
          Open the workflow page (parameters, runs, schedule)
        </a>
      )}
    </div>
  );
}

/**
 * Ask for the workflow's name and visibility, save the notebook (`save`, when it has unsaved changes), publish,
 * and show the outcome with a link to the workflow's page. Resolves with the answer, or null (cancelled/failed).
 */
export async function publishWithDialog(path: string, save: (() => Promise<void>) | null): Promise<IPublishAnswer | null> {
  const form = new PublishForm({ name: defaultName(path), visibility: 'private', group: '', description: '' });
  const choice = await showDialog({
    title: 'Publish as workflow',
    body: form,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Publish' })],
    focusNodeSelector: 'input[name="name"]'
  });
  if (!choice.button.accept || !choice.value) {
    return null;
  }
  let answer: IPublishAnswer | null = null;
  let message: IMessage;
  try {
    if (save) {
      await save();
    }
    answer = await publish({ path, ...choice.value, name: choice.value.name || defaultName(path) });
    message = { kind: 'info', text: publishedText(answer) };
  } catch (error) {
    message = errorMessage(error);
  }
  await showDialog({
    title: answer ? 'Published' : 'Not published',
    body: ReactWidget.create(<Outcome message={message} url={answer ? answer.url : null} />),
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
  return answer;
}
