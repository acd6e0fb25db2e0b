"""The settings of guarded unlearning: plan key `guard`, and the options of `unlearnkit unlearn`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(Strict):
    """How much collateral damage a request may cost, measured against the model before it.

    Defaults a user would accept: on the retain questions and on the collateral facts, how much
    the model still says what it said (the mean probability of its own earlier answers) and the
    share answered correctly, each within 5 points of the start (a share by at least one
    question of the sample); general-text perplexity within 10%. Checked every `check_every`
    optimiser steps of a training method, and once after any method; a training run that
    passes it is rolled back to its best state within it.

    Measured against the model before each request alone, small losses add up: 50 requests of
    the stream world, each within this budget, took general-text perplexity from 47 to 77 and
    model utility from 0.85 to 0.72 (docs/sequential.md). With `since_start` (the default) a run
    also holds perplexity and the share of retain questions answered within the same budget of
    the model the run started from (the first request's "before").
    """

    enabled: bool = True
    retain_drop: float = Field(0.05, ge=0, le=1, description="largest allowed fall on the retain questions: share answered and probability of its earlier answers (absolute)")
    collateral_drop: float = Field(0.05, ge=0, le=1, description="largest allowed fall on the collateral facts: share answered and probability of its earlier answers (absolute)")
    perplexity_rise: float = Field(0.10, ge=0, description="largest allowed relative rise of general-text perplexity")
    check_every: int = Field(5, ge=1, description="optimiser steps between checks during training")
    since_start: bool = Field(True, description="in a run, also hold general-text perplexity and the retain questions answered within this budget of the run's start model, so that drift cannot add up over requests")


class Target(Strict):
    """When a request counts as forgotten.

    `answer_accuracy`: the largest share of the request's questions (plain and paraphrased) whose
    greedy answer may still contain the answer. `probability`: a ceiling on the mean probability
    of the forgotten answers, or `control` for the level of never-seen content (the mean
    probability of the control set: a built-in world's holdout people, or `--control FILE`).
    A request made only of passages, with no probability target, is forgotten once its
    probability falls to `passage_ratio` of the start.
    """

    answer_accuracy: float | None = Field(0.0, ge=0, le=1)
    probability: float | Literal["control"] | None = None
    passage_ratio: float = Field(0.5, gt=0, lt=1)
    stop: bool = Field(True, description="stop training as soon as the target is met")


class Calibration(Strict):
    """`--auto`: trials from the same start at a geometric ladder of learning rates.

    The first trial uses the method's learning rate with `epochs_factor` times its steps (the
    target stops it early). A trial that met the target within the budget ends the search; one
    that had to be rolled back tries gentler rates (`down`), one that stayed within the budget
    without reaching the target tries stronger ones (`up`). The trial that forgot most within
    the budget is kept; every trial is recorded.
    """

    enabled: bool = False
    up: list[float] = Field(default_factory=lambda: [2.0, 4.0])
    down: list[float] = Field(default_factory=lambda: [0.5, 0.25])
    max_trials: int = Field(4, ge=1)
    epochs_factor: float = Field(2.0, ge=1)


class Guard(Strict):
    """Everything guarded unlearning needs to know (plan key `guard`)."""

    enabled: bool = True
    budget: Budget = Field(default_factory=Budget)
    target: Target = Field(default_factory=Target)
    calibrate: Calibration = Field(default_factory=Calibration)
    collateral: int = Field(16, ge=0, description="collateral facts the model knew, measured besides the retain set")
    retain_probes: int = Field(16, ge=0, description="retain records measured (a fixed sample)")
    general_probes: int = Field(2, ge=0, description="general-text passages for perplexity")
    forget_probes: int = Field(16, ge=1, description="forget questions checked during training (every one at the verdict)")
    max_new_tokens: int = Field(12, ge=1, description="greedy tokens per answer checked")
    scale_back_steps: int = Field(3, ge=0, description="halvings tried on an unchecked weight change over the budget before undoing it")
    strict: bool = Field(False, description="any verdict but 'forgotten' is an error (exit code 3)")
