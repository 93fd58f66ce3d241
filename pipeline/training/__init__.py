"""Training, in rooms of its own. A fold reads top-down:

  fold.py         what a fold trains (FoldSpec), what changes as it trains (FoldState), build()
  loaders.py      each phase's batches and the validation batches; batch autosizing
  loop.py         the step and the epoch: plain PyTorch, in one place
  clock.py        the first steps timed: what the fold and the run will take (runtime.budget's probe)
  keep.py         validation, the kept epoch (train.monitor, EMA), SWA's average
  checkpoints.py  last.pt and best.pt, and whether they hold for this config
  epochs.py       phases and epochs around the loop: schedules, history rows, checkpoints

stages/train.py is the command line and the loop over folds; lr_find and show_batch build on
fold.build, loaders.phase_loader and epochs.train_phases_before, so they see exactly what a
fold trains on.
"""
