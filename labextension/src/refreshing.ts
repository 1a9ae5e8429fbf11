// A widget that refreshes itself every few seconds while it is visible, and when it is shown.
import { Widget } from '@lumino/widgets';

export abstract class RefreshingWidget extends Widget {
  constructor(refreshSeconds: number) {
    super();
    this._timer = window.setInterval(() => {
      if (this.isVisible) {
        void this.refresh();
      }
    }, refreshSeconds * 1000);
  }

  abstract refresh(): Promise<void>;

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  private _timer: number;
}
