"""Guarded unlearning: a damage budget enforced during training, collateral probes, a forget
target with automatic calibration, and a verdict after every request (docs/guarded.md).

- `settings`: the `guard` settings of a run or an `unlearn` call (budget, target, calibration);
- `probes`: what is measured (the request, retain, collateral facts the model knew, general
  text, an optional control set of never-seen content);
- `measure`: one measurement of a Subject on the probes, through its two verbs only;
- `verdict`: the budget and target rules and the card printed after every request;
- `monitor`: the training loop's check every few optimiser steps;
- `apply`: `apply_request`, which runs the methods of a step under all of this.
"""
