import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';

import { MlopsSidebar } from './sidebar';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'mlops-lab-jupyterlab:sidebar',
  description: 'Models and deployments of mlops_lab, live, in the left sidebar.',
  autoStart: true,
  optional: [ILayoutRestorer, INotebookTracker, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    palette: ICommandPalette | null
  ) => {
    const sidebar = new MlopsSidebar({ notebooks, refreshSeconds: 10 });
    app.shell.add(sidebar, 'left', { rank: 650 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
    }
    app.commands.addCommand('mlops-lab:refresh', {
      label: 'mlops_lab: Refresh models and deployments',
      execute: () => sidebar.refresh()
    });
    app.commands.addCommand('mlops-lab:open', {
      label: 'mlops_lab: Show models and deployments',
      execute: () => app.shell.activateById(sidebar.id)
    });
    if (palette) {
      palette.addItem({ command: 'mlops-lab:refresh', category: 'mlops_lab' });
      palette.addItem({ command: 'mlops-lab:open', category: 'mlops_lab' });
    }
  }
};

export default plugin;
