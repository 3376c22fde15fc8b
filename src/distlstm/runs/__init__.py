"""The run loop and everything a run leaves on disk: folder, config.json, metrics, plots, checkpoints.

Layering: experiments and the CLI build a mode (``distlstm.modes``) and call
:func:`~distlstm.runs.loop.run`; the loop is the only code that touches run folders.
"""

from distlstm.runs.files import (
    atomic_write_text,
    load_checkpoint,
    plot_curves,
    read_csv_numbers,
    save_checkpoint,
    write_csv,
    write_json,
)

__all__ = ["atomic_write_text", "load_checkpoint", "plot_curves", "read_csv_numbers", "save_checkpoint",
           "write_csv", "write_json"]
