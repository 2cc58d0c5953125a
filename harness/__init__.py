"""The comparison harness behind compare.py: does MMSI help?

Its words, used the same way in every module:
- a *cell* (`grid.Cell`) is one line of the summary: a loss, MMSI on or off, a pair-weight form
  and the --vary values;
- a *trial* (`trial.Trial`) is one seed of one cell, trained by one MMSI_train.py process in a
  folder of its own (DIR/runs/<name>/; the plain MS trials the cells fine-tune from are in
  DIR/stage1/); its flags are its identity;
- a *training* is the MMSI_train.py process of a trial (`supervision.TrialProcess`);
- the *supervisor* (`supervision.Supervisor`) runs the trials, --jobs at a time.

One module per job: grid.py (the cells and the planned trials, checked before anything starts),
trial.py (a trial's folder, flags and descriptor), identity.py (a rerun's flags against those a
trial was trained with), supervision.py (the harness lock, the signals, the training processes),
results.py (what the trials' folders hold, read back), statistics.py (confidence intervals, the
choice on held-out classes, the summary's rows), report.py (summary.csv, summary.md and the
curves), command_line.py (compare.py's options and their checks), messages.py (its lines on
stdout and stderr).
"""
