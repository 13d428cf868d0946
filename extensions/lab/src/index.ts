/**
 * @desp/lab — the DESP Data sidebar of JupyterLab: catalogue search, "insert code" into the active notebook,
 * the user's cache area and "copy to my cache", over the desp_lab server extension's REST API.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { insertCodeCell } from './notebook';
import { DataPanel } from './panel';

import dataIconSvg from '../style/icons/desp-data.svg';

export const dataIcon = new LabIcon({ name: '@desp/lab:data', svgstr: dataIconSvg });

/** Command that shows the DESP Data sidebar. */
export const OPEN_COMMAND = 'desp:open-data-panel';

const plugin: JupyterFrontEndPlugin<void> = {
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

export default plugin;
