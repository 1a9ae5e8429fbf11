import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';

import { MonitorPanel } from './monitor';
import { MlopsSidebar } from './sidebar';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'mlops-lab-jupyterlab:sidebar',
  description: 'Models and deployments of mlops_lab, live, in the left sidebar.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [ILayoutRestorer, INotebookTracker, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    palette: ICommandPalette | null
  ) => {
    const panels = new Map<string, MainAreaWidget<MonitorPanel>>();
    const openMonitor = (name: string) => {
      let panel = panels.get(name);
      if (!panel || panel.isDisposed) {
        const content = new MonitorPanel(name, rendermime, 10);
        panel = new MainAreaWidget({ content });
        panel.id = content.id;
        panel.title.label = content.title.label;
        panel.title.closable = true;
        panels.set(name, panel);
        app.shell.add(panel, 'main');
      }
      app.shell.activateById(panel.id);
      void panel.content.refresh();
    };
    const sidebar = new MlopsSidebar({ notebooks, refreshSeconds: 10, openMonitor });
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
