"""The stages, in the order Make runs them: folds -> train (lr_find beside it) -> infer ->
mine / pseudo (for another experiment to train on) -> ensemble. Each has a `main` taking the
config (train also a fold; ensemble its members) and imports only the shared modules of
pipeline/ (lr_find also builds on train); only pipeline/__main__.py imports a stage."""
