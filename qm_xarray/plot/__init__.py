"""Plots of result streams a physicist would keep, in the form that suits each stream (matplotlib).

`plan(ds, streams, reduce, view)` chooses what to draw, `draw(fig, plan, ds)` draws it into a
figure, `plot(ds, out)` writes it to a file. The forms (`Plan.kind`):

- `"iq"`, single shots: a `save_all` I/Q pair of one value per item and equal lengths (streams I
  and Q, as a single-shot readout saves them): the IQ blobs with an equal aspect, coloured by
  `state` if present, beside a histogram of the state (or, with no state stream, of the shots
  projected on the axis that separates the blobs best, the principal axis of the cloud);
- `"line"`: data that is 1-D once reduced (a `save` buffer, the mean of a `save_all` buffer over
  its items, `save_all` scalars along their item axis); for an I/Q pair of averaged sweeps (two
  streams of the same shape named I and Q, or like I_all/Q_all, I1/Q1, qubit_I/qubit_Q) I and Q
  together (one panel when they have the same units, else two), or magnitude and phase;
- `"image"`: data that is 2-D once reduced, one image per quantity (I and Q, or magnitude and
  phase) with a colour bar;
- `"trace"`: ADC traces (a `save_all` stream of 1-D buffers whose buffer axis is time: units of
  time, or named like time/adc/trace): the last few traces and the mean of all, against time.

`view` chooses the quantities of an I/Q pair: "auto" (I and Q if there is a pair), "iq" (I and Q;
a pair is required) or "magphase" (magnitude sqrt(I^2+Q^2) and phase atan2(Q, I), unwrapped along
the last axis, in rad; averaged sweeps only). Axis labels come from the dataset: `long_name` (or
the name) and `units` attributes of the variables and coordinates ("drive amplitude [V]"), so the
same code draws a live job and its zarr export. The title names the job, what is drawn and the
job's state, and marks data loss (`qm_has_dataloss`) and execution errors (`qm_execution_errors`).

The file's suffix names its format, in any case: `.png`, `.svg`, `.pdf`, `.jpg`/`.jpeg` and the
other formats of matplotlib's Agg canvas (`formats()`); another suffix, or none, is a
`QmValueError` that names it and the formats there are. Files are written atomically (a temporary
file in the same folder, then renamed), so a reader never sees half an image. matplotlib is
imported only when drawing.
"""

from __future__ import annotations

from .draw import DPI, draw, formats, new_figure, output_format, plot, save_figure
from .live import live_plot
from .plan import KINDS, N_TRACES, REDUCTIONS, VIEWS, Plan, iq_partner, label, plan, title

__all__ = ["DPI", "KINDS", "N_TRACES", "REDUCTIONS", "VIEWS", "Plan", "draw", "formats", "iq_partner",
           "label", "live_plot", "new_figure", "output_format", "plan", "plot", "save_figure", "title"]
