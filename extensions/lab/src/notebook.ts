/** Putting a code snippet into the active notebook. */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';

/**
 * Insert a new code cell holding `code` below the active cell of the current notebook and focus it.
 * Returns the notebook's path, or null when no notebook is open.
 */
export function insertCodeCell(app: JupyterFrontEnd, tracker: INotebookTracker, code: string): string | null {
  const panel = tracker.currentWidget;
  if (!panel || panel.isDisposed || !panel.content.model) {
    return null;
  }
  const notebook = panel.content;
  NotebookActions.insertBelow(notebook);
  if (notebook.activeCell && notebook.activeCell.model.type !== 'code') {
    NotebookActions.changeCellType(notebook, 'code');
  }
  const cell = notebook.activeCell;
  if (!cell) {
    return null;
  }
  cell.model.sharedModel.setSource(code);
  app.shell.activateById(panel.id);
  notebook.mode = 'command';
  return panel.context.path;
}
