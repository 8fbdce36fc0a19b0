"""MLflow through spool files: workers write events to files, one tracker thread mirrors them.

- `spool`: the per-run event files (`RunRecorder`) and their `.state` offsets
- `tracker`: `Tracker`, the parent's thread that mirrors the spool folder into MLflow
- `mirror`, `outage`: exactly-once mirroring, and what is missing during an outage
- `store`: MLflow stores, experiments and runs: the lookups every command shares
- `sync`: `sweep sync` (send what the spool folders hold and MLflow lacks)
"""

from typing import TYPE_CHECKING

from sweep._lazy import lazy_exports

if TYPE_CHECKING:
    from .sync import sync_all
    from .tracker import Tracker

__all__ = ['Tracker', 'sync_all']

__getattr__, __dir__ = lazy_exports(__name__, {'Tracker': '.tracker', 'sync_all': '.sync'})
