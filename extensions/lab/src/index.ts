/**
 * @desp/lab — the DESP Data sidebar of JupyterLab (catalogue search, "insert code" into the active notebook, the
 * user's cache area and "copy to my cache"), the DCU balance in the status bar, the DESP Traces sidebar (trace,
 * verify, search by hash) and "Publish as workflow", over the desp_lab server extension's REST API.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon, ToolbarButton } from '@jupyterlab/ui-components';

import { insertCodeCell } from './notebook';
import { DataPanel } from './panel';
import { BalanceStatus } from './status';
import { TracesPanel } from './traces';
import { publishWithDialog } from './workflows';

import dataIconSvg from '../style/icons/desp-data.svg';
import tracesIconSvg from '../style/icons/desp-traces.svg';
import workflowIconSvg from '../style/icons/desp-workflow.svg';

export const dataIcon = new LabIcon({ name: '@desp/lab:data', svgstr: dataIconSvg });
export const tracesIcon = new LabIcon({ name: '@desp/lab:traces', svgstr: tracesIconSvg });
export const workflowIcon = new LabIcon({ name: '@desp/lab:workflow', svgstr: workflowIconSvg });

/** Command that shows the DESP Data sidebar. */
export const OPEN_COMMAND = 'desp:open-data-panel';
/** Commands of the DESP Traces sidebar. */
export const OPEN_TRACES_COMMAND = 'desp:open-traces-panel';
export const TRACE_FILE_COMMAND = 'desp:trace-file';
export const VERIFY_FILE_COMMAND = 'desp:verify-file';
/** Publish a notebook (the `path` argument, else the current notebook) to the hub's workflows service. */
export const PUBLISH_WORKFLOW_COMMAND = 'desp:publish-workflow';

const dataPanelPlugin: JupyterFrontEndPlugin<void> = {
  id: '@desp/lab:data-panel',
  description: 'The DESP Data sidebar: catalogue search, insert code, my cache.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILayoutRestorer],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, restorer: ILayoutRestorer | null) => {
    const panel = new DataPanel({
      insertCode: (code: string) => insertCodeCell(app, tracker, code)
    });
    panel.title.icon = dataIcon;
    panel.title.caption = 'DESP Data';
    app.shell.add(panel, 'left', { rank: 700 });
    if (restorer) {
      restorer.add(panel, panel.id);
    }
    app.commands.addCommand(OPEN_COMMAND, {
      label: 'DESP Data: open the data panel',
      icon: dataIcon,
      execute: () => app.shell.activateById(panel.id)
    });
  }
};

const balancePlugin: JupyterFrontEndPlugin<void> = {
  id: '@desp/lab:balance-status',
  description: "The user's DCU balance and this session's cost in the status bar.",
  autoStart: true,
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null) => {
    if (!statusBar) {
      return;
    }
    const item = new BalanceStatus();
    statusBar.registerStatusItem('@desp/lab:balance-status', {
      item,
      align: 'left',
      rank: 900,
      isActive: () => item.isActive,
      activeStateChanged: item.activeStateChanged
    });
  }
};

/** The path the command should work on: its `path` argument, else the file browser's first selected item. */
function targetPath(args: { [key: string]: unknown }, factory: IFileBrowserFactory | null): string | null {
  if (typeof args.path === 'string' && args.path) {
    return args.path;
  }
  const browser = factory?.tracker.currentWidget;
  if (!browser) {
    return null;
  }
  const selected = browser.selectedItems().next();
  return selected.done || !selected.value ? null : selected.value.path;
}

const tracesPlugin: JupyterFrontEndPlugin<void> = {
  id: '@desp/lab:traces-panel',
  description: 'The DESP Traces sidebar: trace a file or folder, verify it, search traces by hash.',
  autoStart: true,
  optional: [ILayoutRestorer, IFileBrowserFactory, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    factory: IFileBrowserFactory | null,
    palette: ICommandPalette | null
  ) => {
    const panel = new TracesPanel();
    panel.title.icon = tracesIcon;
    panel.title.caption = 'DESP Traces';
    app.shell.add(panel, 'left', { rank: 710 });
    if (restorer) {
      restorer.add(panel, panel.id);
    }
    const run = (action: 'trace' | 'verify', args: { [key: string]: unknown }) => {
      app.shell.activateById(panel.id);
      const path = targetPath(args, factory);
      if (path) {
        panel.request(action, path);
      }
    };
    app.commands.addCommand(OPEN_TRACES_COMMAND, {
      label: 'DESP Traces: open the traces panel',
      icon: tracesIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(TRACE_FILE_COMMAND, {
      label: 'Trace this file',
      caption: "Compute the file's trace (its hash) in the DESP Traces panel, registering it when so chosen",
      icon: tracesIcon,
      execute: args => run('trace', args)
    });
    app.commands.addCommand(VERIFY_FILE_COMMAND, {
      label: 'Verify this file',
      caption: 'Check the file against its registered trace in the DESP Traces panel',
      icon: tracesIcon,
      execute: args => run('verify', args)
    });
    // Files and folders (a Zarr store is a folder) of the file browser.
    app.contextMenu.addItem({ command: TRACE_FILE_COMMAND, selector: '.jp-DirListing-item[data-isdir]', rank: 60 });
    app.contextMenu.addItem({ command: VERIFY_FILE_COMMAND, selector: '.jp-DirListing-item[data-isdir]', rank: 61 });
    if (palette) {
      for (const command of [OPEN_TRACES_COMMAND, TRACE_FILE_COMMAND, VERIFY_FILE_COMMAND]) {
        palette.addItem({ command, category: 'DESP' });
      }
    }
  }
};

const workflowsPlugin: JupyterFrontEndPlugin<void> = {
  id: '@desp/lab:publish-workflow',
  description: 'Publish as workflow: a notebook becomes (a new version of) a workflow of the hub.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, IFileBrowserFactory],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    factory: IFileBrowserFactory | null
  ) => {
    const notebookPath = (args: { [key: string]: unknown }): string | null => {
      if (typeof args.path === 'string' && args.path) {
        return args.path;
      }
      if (args.fromBrowser) {
        const path = targetPath(args, factory);
        return path && path.endsWith('.ipynb') ? path : null;
      }
      return tracker.currentWidget?.context.path ?? null;
    };
    app.commands.addCommand(PUBLISH_WORKFLOW_COMMAND, {
      label: 'Publish as workflow',
      caption: 'Publish this notebook to the workflows service (its parameters cell gives the parameters)',
      icon: workflowIcon,
      isEnabled: args => notebookPath(args) !== null,
      execute: async args => {
        const path = notebookPath(args);
        if (!path) {
          return null;
        }
        // The saved file is what is published: save the open notebook first if it has unsaved changes.
        const open = tracker.find(panel => panel.context.path === path);
        const save = open && open.context.model.dirty ? () => open.context.save() : null;
        return publishWithDialog(path, save);
      }
    });
    tracker.widgetAdded.connect((_, panel) => {
      const button = new ToolbarButton({
        icon: workflowIcon,
        label: 'Publish',
        tooltip: 'Publish as workflow',
        onClick: () => void app.commands.execute(PUBLISH_WORKFLOW_COMMAND, { path: panel.context.path })
      });
      button.node.dataset.testid = 'desp-publish-button';
      panel.toolbar.insertItem(10, 'despPublishWorkflow', button);
    });
    app.contextMenu.addItem({
      command: PUBLISH_WORKFLOW_COMMAND,
      args: { fromBrowser: true },
      selector: '.jp-DirListing-item[data-file-type="notebook"]',
      rank: 62
    });
    if (palette) {
      palette.addItem({ command: PUBLISH_WORKFLOW_COMMAND, category: 'DESP' });
    }
  }
};

export default [dataPanelPlugin, balancePlugin, tracesPlugin, workflowsPlugin];
